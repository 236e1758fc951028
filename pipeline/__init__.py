"""fashion-cir: two-stage composed image retrieval for fashion, as a DVC pipeline (dvc.yaml runs stages/)."""
