"""Did the job learn? A pure verdict on its evaluations, so that a distributed job that ends
near chance, falls and does not recover, or is still climbing when its epochs run out, says
so instead of reporting plain success (16 workers under the paper's AGWU once ended at 9.2%
and exited 0; on small data, 4 workers at a one-process job's 12 epochs ended 36 to 52
points under it (medians of two runs), still learning: docs/scaling.md)."""

from __future__ import annotations

CHANCE_MARGIN = 0.05  # within this of 1/classes is "no better than chance"
FALL_MARGIN = 0.10  # a final accuracy this far below the job's best evaluation "fell"
RISE_MARGIN = 0.05  # best validation accuracy this much higher in the last quarter than in the first half: "still learning"
MIN_EVALUATIONS = 4  # fewer evaluations than this cannot say whether a job was still climbing


def near_chance(accuracy: float, num_classes: int) -> bool:
    """One class has no chance level to fall to: never near it."""
    return num_classes > 1 and accuracy <= 1.0 / num_classes + CHANCE_MARGIN


def verdict(final_accuracy: float, evaluations: list[dict], num_classes: int, all_epochs: bool = False,
            workers: int = 1) -> str | None:
    """A warning for a job that did not learn, or had not finished learning (None: it did).
    evaluations: the job's evaluations so far, each with a test "accuracy" and, from a worker,
    a "val_accuracy". all_epochs: the job ran out of epochs (not stopped by a target or its
    patience), the one case where "still learning" can be said."""
    chance = 1.0 / max(1, num_classes)
    if near_chance(final_accuracy, num_classes):
        return (f"final test accuracy {final_accuracy:.3f} is no better than chance ({chance:.3f} for "
                f"{num_classes} classes): the job did not learn")
    best = max((e["accuracy"] for e in evaluations if "accuracy" in e), default=final_accuracy)
    if final_accuracy < best - FALL_MARGIN:
        return (f"final test accuracy {final_accuracy:.3f} fell from its best {best:.3f} and did not "
                "recover")
    return still_learning(evaluations, workers) if all_epochs else None


def spans(evaluations: list[dict]) -> tuple[float, float] | None:
    """The best validation accuracy over the first half of a job's scored evaluations and
    over the last quarter (None: fewer than MIN_EVALUATIONS scores). The final evaluation
    counts when it scored the validation split (workers/flow.py does): under `sync` the last
    round is evaluated only there. Best, not last, so that one low score does not hide a rise;
    with fewer than 8 scores the last quarter is one score, so one high score can make one."""
    scores = [e["val_accuracy"] for e in evaluations if e.get("val_accuracy") is not None]
    if len(scores) < MIN_EVALUATIONS:
        return None
    return max(scores[:len(scores) // 2]), max(scores[-(len(scores) // 4):])


def rise(evaluations: list[dict]) -> float | None:
    """How far the last quarter's best is above the first half's (spans); what still_learning
    compares with RISE_MARGIN."""
    found = spans(evaluations)
    return None if found is None else found[1] - found[0]


def climbed(rise_: float | None) -> bool:
    """Whether a rise (see rise) counts: at least RISE_MARGIN, float rounding aside (0.90 to
    0.95 is 0.04999... in floats)."""
    return rise_ is not None and rise_ >= RISE_MARGIN - 1e-9


def still_learning(evaluations: list[dict], workers: int = 1) -> str | None:
    """A warning when the job's best validation accuracy over its last quarter of evaluations
    is at least RISE_MARGIN above its best over the first half: the epochs ran out while it
    climbed. Why it matters with workers: under the averaging rules K workers' pushes add up
    to about one push's step, so at equal epochs they move the model less than one process,
    and a small job ends before it has learned (glyphs, 4 workers, 12 epochs: medians 0.48 and
    0.64 where one process reached 0.99, benchmarks.small_data, docs/scaling.md). The job has
    no one-process run to compare with; a climb still under way is what it can see. Not seen:
    a job stuck on a plateau. Not sized to the validation slice: on 48 images 5 points is 2.4
    images, so a small slice's noise can make a rise (the guardrail's fall_bound is sized; a
    bound as wide here, 24 points on 48 images, would miss most of the rises measured)."""
    found = spans(evaluations)
    if found is None or not climbed(found[1] - found[0]):
        return None
    early, late = found
    advice = ("more epochs would likely raise it" if workers <= 1 else
              f"more epochs, or fewer than {workers} training processes, would likely raise it: on small data "
              "more workers need more epochs")
    return (f"the job was still learning when its epochs ran out (best validation accuracy {early:.3f} over the first half "
            f"of its evaluations, {late:.3f} over the last quarter): {advice}")
