# The two commands a new user needs (see README.md). PYTHON=/path/to/python3.12 overrides
# the interpreter search in scripts/find-python.sh.
.PHONY: demo test bench clean-env

demo:
	@bash scripts/bootstrap.sh
	.venv/bin/marrow-abm run aml_progression --out outputs/aml_progression

test:
	@bash scripts/bootstrap.sh
	.venv/bin/python -m pytest -q

bench:
	@bash scripts/bootstrap.sh
	.venv/bin/python -m pytest benchmarks/ --benchmark-only --benchmark-group-by=group

clean-env:
	rm -rf .venv
