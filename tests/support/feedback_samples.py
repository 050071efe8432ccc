"""Fixed inputs shared by the feedback unit tests: one key set, one instant, one real classifier answer.

Kept in one place so the token and scoring tests read the same bytes (the wine answer is what
`mlrollout-serve` returns for two rows of the wine classifier: a label output and its probabilities)."""

from __future__ import annotations

from mlrollout_serving.contract.feedback import FeedbackKeys

KEY = b"s" * 32
KEYS = FeedbackKeys({3: KEY})
NOW = 1_796_400_000
WINE = (
    b'{"model_name":"wine","model_version":"2","outputs":[{"name":"label","datatype":"INT64","shape":[2],'
    b'"data":[1,2]},{"name":"probabilities","datatype":"FP32","shape":[2,3],"data":[0.1,0.8,0.1,0,0.2,0.8]}]}'
)
