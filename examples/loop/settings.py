"""The loop's numbers in one place: how much traffic, how many held-out items, and how to train.

`run.py` (through slipway) and `offline.py` (in one process) both read DEFAULT_SETTINGS, so what
was measured offline is what the loop runs. The measurements behind the defaults are in README.md.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class TrainingSettings(BaseModel):
    """Data sizes and LoRA hyperparameters of one run of the loop."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_heldout: int = Field(60, ge=6, description="Held-out tickets in the eval suite (never sent as traffic).")
    num_traffic: int = Field(300, ge=6, description="Tickets sent as simulated production traffic; "
                                                    "their corrected traces are the training data.")
    heldout_templates: int = Field(2, ge=0, le=5, description="Templates per queue used only for held-out "
                                                              "tickets (0: held-out tickets differ by text only).")
    n_epochs: int = Field(1, ge=1, description="Passes over the training rows.")
    batch_size: int = Field(8, ge=1, description="Rows per optimizer step.")
    learning_rate_multiplier: float = Field(10.0, gt=0, description="Times the trainer's base rate of 2e-4.")
    lora_rank: int = Field(8, ge=1, description="Rank of each LoRA update.")
    lora_alpha: int = Field(16, ge=1, description="LoRA scale numerator: updates scale by alpha / rank.")
    max_seq_len: int = Field(256, ge=16, description="Tokens per training row (a ticket's chat is ~150).")
    warmup_steps: int = Field(3, ge=0, description="Steps of linear learning-rate warm-up.")
    seed: int = Field(0, ge=0, description="Seeds the adapter's initial weights and the row order.")

    def hyperparameters(self) -> dict[str, Any]:
        """The fine-tuning job's `hyperparameters` (OpenAI's fields plus LoRA's)."""
        return {"n_epochs": self.n_epochs, "batch_size": self.batch_size,
                "learning_rate_multiplier": self.learning_rate_multiplier, "lora_rank": self.lora_rank,
                "lora_alpha": self.lora_alpha, "max_seq_len": self.max_seq_len, "warmup_steps": self.warmup_steps}


DEFAULT_SETTINGS = TrainingSettings()
