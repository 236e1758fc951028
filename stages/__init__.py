"""DVC stage entry points: one thin module per stage, run by dvc.yaml as `python -m stages.<name>`.

Under `fashion-cir warm` a stage hands itself to the warm server here, before it imports anything heavy
(pipeline/warm.py); otherwise this does nothing."""

from pipeline.warm import hand_over

hand_over()
