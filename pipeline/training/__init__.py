"""The two training stages (stage1.py, stage2.py) and what they share: one loop (loop.py), the losses (losses.py),
resumable epochs (resume.py), torchrun (distributed.py) and the time and memory report (report.py)."""
