"""Stand-ins the product itself runs where the real thing cannot exist here: the tiny random-weight models, the scripted
teacher, judge and policy servers, the scripted engine client, loopback serving helpers and the sample corpus's
index, a MinerU server (`make demo`, evaluation, synthesis, benchmarks and tests use them). Doubles that only tests
use are fixtures in the tests' conftest.py files."""
