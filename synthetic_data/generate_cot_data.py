"""`python synthetic_data/generate_cot_data.py ...`: the reference command, kept; the stage lives in
`unidoc_rl.synthesis.generate_cot_data` (console command `unidoc-synthesize`)."""

from unidoc_rl.synthesis.generate_cot_data import main

if __name__ == "__main__":
    raise SystemExit(main())
