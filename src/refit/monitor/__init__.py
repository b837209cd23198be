"""The monitor role: what was served, judged against what the model was trained on (drift)
and against the true values clients send back (live quality, estimated before labels arrive)."""
