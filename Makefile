# The two commands: `make demo` (the main job on embedded defaults) and `make test`.
# Set-up is incremental: each environment is rebuilt only when its lock file changes.
PYTHON ?= python3.11
VENV := .venv
SERVING := .venv-serving
PLATFORM_OK := $(VENV)/.platform-ok
SERVING_OK := $(SERVING)/.serving-ok

.PHONY: setup system demo test stop lint bench
setup: system $(PLATFORM_OK) $(SERVING_OK)

# Debian's redis-server backs the Redis online-store test (Feast's scale-out online store);
# nginx is the local serving target's ingress (canary weights, shadow mirror); wrk drives bench/serve;
# prometheus (with promtool) and prometheus-pushgateway scrape the predictors and hold what the
# monitoring flow pushes (deployments/prometheus/, tasks/monitoring/prometheus.py); chromium and
# chromium-driver run the UI checks; cmake and g++ build Horovod (.ci/build_horovod.sh); postgresql
# backs the Prefect servers of the integration tests (flows/local_postgres.py).
system:
	@command -v redis-server >/dev/null && command -v nginx >/dev/null && command -v wrk >/dev/null && \
	  command -v promtool >/dev/null && command -v prometheus-pushgateway >/dev/null && command -v chromedriver >/dev/null && \
	  command -v cmake >/dev/null && command -v g++ >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  { apt-get update -qq && apt-get install -y -qq redis-server nginx-light wrk cmake g++ postgresql >/dev/null && \
	    apt-get install -y -qq --no-install-recommends prometheus prometheus-pushgateway chromium chromium-driver >/dev/null; }

$(PLATFORM_OK): requirements.lock pyproject.toml .ci/build_horovod.sh
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements.lock
	$(VENV)/bin/pip install -q --no-deps -e .
	bash .ci/build_horovod.sh $(VENV)
	$(VENV)/bin/pip check
	touch $@

$(SERVING_OK): deployments/serving/requirements.lock
	test -x $(SERVING)/bin/python || $(PYTHON) -m venv $(SERVING)
	$(SERVING)/bin/pip install -q -r deployments/serving/requirements.lock
	$(SERVING)/bin/pip check
	touch $@

demo: setup
	$(VENV)/bin/mlops demo

test: setup
	$(VENV)/bin/python -m pytest -q

stop:
	-$(VENV)/bin/mlops serving stop
	-$(VENV)/bin/mlops server stop

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy

bench: setup
	$(VENV)/bin/python -m bench.preprocess
	$(VENV)/bin/python -m bench.features
	$(VENV)/bin/python -m bench.features --repeats 0 --growth 500000,1000000,2000000,5000000
	$(VENV)/bin/python -m bench.train
	$(VENV)/bin/python -m bench.validate
	$(VENV)/bin/python -m bench.serve
	$(VENV)/bin/python -m bench.load
	$(VENV)/bin/python -m bench.monitor
	$(VENV)/bin/python -m bench.growth
