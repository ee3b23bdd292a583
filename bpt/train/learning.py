"""Did the job learn? A pure verdict on its test evaluations, so that a distributed job that
ends near chance, or falls and does not recover, says so instead of reporting plain success
(16 workers under the paper's AGWU once ended at 9.2% and exited 0)."""

from __future__ import annotations

CHANCE_MARGIN = 0.05  # within this of 1/classes is "no better than chance"
FALL_MARGIN = 0.10  # a final accuracy this far below the job's best evaluation "fell"


def near_chance(accuracy: float, num_classes: int) -> bool:
    """One class has no chance level to fall to: never near it."""
    return num_classes > 1 and accuracy <= 1.0 / num_classes + CHANCE_MARGIN


def verdict(final_accuracy: float, evaluations: list[dict], num_classes: int) -> str | None:
    """A warning for a job that did not learn (None: it did). evaluations: the job's test
    evaluations so far, each with an "accuracy"."""
    chance = 1.0 / max(1, num_classes)
    if near_chance(final_accuracy, num_classes):
        return (f"final test accuracy {final_accuracy:.3f} is no better than chance ({chance:.3f} for "
                f"{num_classes} classes): the job did not learn")
    best = max((e["accuracy"] for e in evaluations if "accuracy" in e), default=final_accuracy)
    if final_accuracy < best - FALL_MARGIN:
        return (f"final test accuracy {final_accuracy:.3f} fell from its best {best:.3f} and did not "
                "recover")
    return None
