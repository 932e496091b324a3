"""Fine-tuning support: the preflight of a finetune.py plan (`lab finetune check`)."""
