"""Stage 4: what fits the shipped models: hashing losses, ITQ and hashing fine-tuning data, the merge scorer's training."""
