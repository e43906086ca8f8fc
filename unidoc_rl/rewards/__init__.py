"""Dense multi-part reward over episode records.

Modules: `ground_truth` (per-sample gold data), `components` (pure component functions), `answer_match` (rule-based
answer scoring), `presets` (weights and gates), `settings` (config), `scorer` (one episode -> breakdown),
`verl_manager` (the verl reward-loop manager). Submodules are imported explicitly so that the judge package, which
uses the rule-based scorer, can be imported on its own.
"""
