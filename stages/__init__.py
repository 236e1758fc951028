"""DVC stage entry points: one thin module per stage, run by dvc.yaml as `python -m stages.<name>`."""
