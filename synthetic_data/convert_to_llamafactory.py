"""`python synthetic_data/convert_to_llamafactory.py ...`: the reference command, kept; the stage lives in
`unidoc_rl.synthesis.convert_to_llamafactory` (console command `unidoc-convert-sft`)."""

from unidoc_rl.synthesis.convert_to_llamafactory import main

if __name__ == "__main__":
    raise SystemExit(main())
