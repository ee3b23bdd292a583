"""Training inside one worker and the rules that merge it: local training and scoring
(training, with torch), the inner layer (inner), and pure decisions with no torch and no
I/O: the merge rules (merge), learning-rate schedules (schedule), the accuracy guardrail
(guardrail), whether a job learned (learning), the gradient noise scale (noise_scale) and
time-to-target scoring (evaluation).
"""
