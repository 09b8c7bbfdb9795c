# xray-spark: `make` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
LAKE ?= lake
CONF ?= conf/local.yaml
DEMO_IMAGES ?= 1500
DEMO_ARCHIVE := $(LAKE)/archive/synthetic
PYTEST_ARGS ?=
# Test processes (pytest-xdist); each takes whole modules, so a module's fixtures are built once. 0: one process.
PYTEST_WORKERS ?= 3
# Every job runs as `xray-spark <job>` (xray_spark/launch.py): spark-submit with the master and
# driver memory of the job's conf (so CONF=conf/standalone.yaml runs every target on the cluster
# of `make cluster-up`), Spark's console kept quiet, the driver JVM's options of xray_spark/session.py.
XRAY = $(VENV)/bin/xray-spark
DATASET = $(shell $(PY) -m xray_spark.config --config $(CONF) --get dataset)
# Spark's web UI binds to this address (when it is on: spark.ui.enabled defaults to false
# in local mode); the driver's other services bind to 127.0.0.1 in local mode too.
export SPARK_LOCAL_IP ?= 127.0.0.1

.PHONY: help setup demo demo-dicom nightly nightly-demo test lint check-java clean cluster-up cluster-down bench \
  sql-server sql-server-stop dicom-node dicom-node-stop bench-dicom-node bench-deliver demo-pacs demo-pacs-stop \
  worklist-server worklist-server-stop bench-web bench-monitor bench-release bench-node-limits

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

check-java: ## stop with one clear line unless Java 17+ is installed
	@v=$$( (java -version 2>&1 || true) | sed -nE 's/.*version "([0-9]+)(\.([0-9]+))?.*/\1 \3/p' | head -1); \
	major=$${v%% *}; [ "$$major" = "1" ] && major=$${v##* }; \
	if [ -z "$$major" ]; then echo "error: Java 17 is required by Spark and no 'java' was found: install OpenJDK 17 (apt-get install openjdk-17-jre-headless)"; exit 1; fi; \
	if [ "$$major" -lt 17 ]; then echo "error: Java 17 or newer is required by Spark, found Java $$major: install OpenJDK 17 and put it first on PATH"; exit 1; fi

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found: install Python 3.11 or run make PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# --no-compile: pip would byte-compile every file of TensorFlow, Spark and the rest (20 of 56 s of a fresh
	@# install on 2 cores); Python compiles the modules a process imports on first use instead, a fraction of a second.
	$(PY) -m pip install --quiet --no-compile -e '.[dev]'
	@# pip's bin/beeline looks for pyspark with the python3 on PATH; this one knows where it is.
	@home=$$($(PY) -c "import os, pyspark; print(os.path.dirname(pyspark.__file__))"); \
	  printf '#!/bin/sh\n# beeline of the pyspark in this venv (written by make setup)\nexport SPARK_HOME="%s"\nexec "$$SPARK_HOME/bin/beeline" "$$@"\n' "$$home" > $(VENV)/bin/beeline
	@touch $@

setup: check-java $(VENV)/.installed ## create .venv and install xray-spark with its dev extra

$(DEMO_ARCHIVE)/Data_Entry_2017.csv: | $(VENV)/.installed
	$(PY) -m xray_spark.dev.synthetic --output $(DEMO_ARCHIVE) --images $(DEMO_IMAGES) --size 256 --seed 7

# The demo's split: a fifth of its ~300 patients for validation, where each finding's threshold
# and calibration are fitted (a tenth left 2-11 positives of 3-5 patients for some findings).
# Every prepare into the demo store must keep it (an incremental run with another split is refused).
DEMO_SPLIT := --set split.train=0.6 --set split.val=0.2
# The demo's prepare and train (make demo runs them each time; make demo-dicom only when the
# lake has no demo model yet).
define demo_model
	$(XRAY) prepare --config $(CONF) --lake $(LAKE) $(DEMO_SPLIT) \
	  --metadata $(DEMO_ARCHIVE)/Data_Entry_2017.csv --images $(DEMO_ARCHIVE)/images \
	  --bbox $(DEMO_ARCHIVE)/BBox_List_2017.csv --summary-json $(LAKE)/reports/prepare-latest.json
	$(XRAY) train --config $(CONF) --lake $(LAKE) --model small_cnn \
	  --summary-json $(LAKE)/reports/train-latest.json
	$(XRAY) promote --config $(CONF) --lake $(LAKE) --reason "the demo's model" \
	  --model-version $$($(PY) -c "import json; print(json.load(open('$(LAKE)/reports/train-latest.json'))['version'])")
endef

demo: setup $(DEMO_ARCHIVE)/Data_Entry_2017.csv ## the whole pipeline on a synthetic archive, lake in ./lake
	$(demo_model)
	$(XRAY) score --config $(CONF) --lake $(LAKE) --new-only --heatmaps called \
	  --summary-json $(LAKE)/reports/score-latest.json
	$(XRAY) evaluate --config $(CONF) --lake $(LAKE) --localization --summary-json $(LAKE)/reports/evaluate-latest.json
	@echo; echo "Tonight's worklist, riskiest first:"
	@$(XRAY) sql --config $(CONF) --lake $(LAKE) "SELECT risk_rank, image_id, patient_id, ROUND(risk_score, 3) AS risk, \
	  called_probabilities FROM xray.worklist WHERE dataset = '$(DATASET)' ORDER BY risk_rank LIMIT 10"
	$(XRAY) worklist --config $(CONF) --lake $(LAKE) --summary-json $(LAKE)/reports/worklist-latest.json

# A hospital's PACS export instead: synthetic DICOM films with made-up names, birth dates and
# addresses in their headers, mixed transfer syntaxes, a few objects that are not frontal chest
# films, and labels for half of the patients. Prepared (patients pseudonymised), scored with the
# demo's model (trained first if the lake has none), evaluated on the labelled test patients.
DICOM_ARCHIVE := $(LAKE)/archive/dicom
DICOM_IMAGES ?= 400
# The demo's pseudonym key, made once, outside the lake; a hospital keeps its own key safe.
DEMO_KEY ?= .demo-pseudonym.key
$(DICOM_ARCHIVE)/labels.csv: | $(VENV)/.installed
	$(PY) -m xray_spark.dev.synthetic --format dicom --output $(DICOM_ARCHIVE) --images $(DICOM_IMAGES) --size 256 --seed 11
$(DEMO_KEY):
	@umask 077 && $(PY) -c "import secrets; print(secrets.token_hex(32))" > $@
$(LAKE)/reports/train-latest.json: | $(DEMO_ARCHIVE)/Data_Entry_2017.csv
	$(demo_model)

demo-dicom: setup $(DICOM_ARCHIVE)/labels.csv $(DEMO_KEY) $(LAKE)/reports/train-latest.json ## a PACS export (DICOM) prepared, scored, evaluated, on the worklist
	$(XRAY) prepare --config $(CONF) --lake $(LAKE) --source dicom --dataset hospital --incremental \
	  --images $(DICOM_ARCHIVE)/export --labels $(DICOM_ARCHIVE)/labels.csv --set privacy.key_file=$(abspath $(DEMO_KEY)) \
	  --summary-json $(LAKE)/reports/dicom-prepare-latest.json
	$(XRAY) score --config $(CONF) --lake $(LAKE) --dataset hospital --new-only \
	  --summary-json $(LAKE)/reports/dicom-score-latest.json
	$(XRAY) evaluate --config $(CONF) --lake $(LAKE) --dataset hospital \
	  --summary-json $(LAKE)/reports/dicom-evaluate-latest.json
	@echo; echo "The hospital's worklist, riskiest first (the accession number leads back to the PACS):"
	@$(XRAY) sql --config $(CONF) --lake $(LAKE) "SELECT risk_rank, accession_number, study_datetime, \
	  ROUND(risk_score, 3) AS risk, called_probabilities FROM xray.worklist WHERE dataset = 'hospital' ORDER BY risk_rank LIMIT 10"
	$(XRAY) worklist --config $(CONF) --lake $(LAKE) --dataset hospital \
	  --summary-json $(LAKE)/reports/dicom-worklist-latest.json

# The round trip with Orthanc as the hospital's PACS (Debian's orthanc and dcmtk): Orthanc on
# 127.0.0.1 holds a synthetic DICOM export and sends it to the DICOM node; the nightly flow
# prepares and scores the node's spool with the demo's model and delivers an SR and a heatmap
# picture into each study; Orthanc's counts per study and one study's address are shown.
# Orthanc, the export and the spool live in PACS_DIR (outside the lake: they name patients).
PACS_DIR ?= .demo-pacs
PACS_HTTP ?= 8042
PACS_DICOM ?= 4242
PACS_NODE ?= 11113
demo-pacs: setup $(DEMO_KEY) $(LAKE)/reports/train-latest.json ## the round trip with Orthanc as the PACS: studies in, SR and heatmap pictures back
	@command -v Orthanc >/dev/null && command -v dsrdump >/dev/null || { echo "demo-pacs: error: Orthanc and dcmtk are needed: apt-get install orthanc dcmtk" >&2; exit 2; }
	$(PY) -m xray_spark.dev.pacs_demo up --dir $(PACS_DIR) --lake $(LAKE) --http-port $(PACS_HTTP) \
	  --dicom-port $(PACS_DICOM) --node-port $(PACS_NODE)
	$(XRAY) nightly --config $(CONF) --lake $(LAKE) --source dicom --images $(PACS_DIR)/spool --set dataset=pacs \
	  --set privacy.key_file=$(abspath $(DEMO_KEY)) --set "deliver.destinations=[ORTHANC@127.0.0.1:$(PACS_DICOM)]" \
	  --set deliver.secondary_capture=true --summary-json $(LAKE)/reports/pacs-nightly-latest.json
	@echo; echo "Orthanc's studies now (each film, its SR and its heatmap picture):"
	@$(PY) -m xray_spark.dev.pacs_demo show --dir $(PACS_DIR) --http-port $(PACS_HTTP) | column -t -s $$'\t' | head -12
	@echo; echo "One of the SRs, as dcmtk's dsrdump reads it:"; dsrdump $(PACS_DIR)/example-sr.dcm | head -24

demo-pacs-stop: ## stop the Orthanc that make demo-pacs started
	@if [ -x $(PY) ]; then $(PY) -m xray_spark.dev.pacs_demo down --dir $(PACS_DIR); fi

# The nightly run: INCOMING holds tonight's Data_Entry_2017.csv and images/ (SOURCE=nih), or
# tonight's DICOM files (SOURCE=dicom, with PREPARE_SET naming the dataset and the key file).
# SOURCE=dicom without INCOMING reads the DICOM node's spool (dicom_node.spool of the conf): what
# arrived since the last night. Without the delivery (a late one) it stops in one line and writes
# nothing: it never invents studies.
SOURCE ?= nih
NIGHT := $(shell date -u +%Y%m%dT%H%M%S)
INCOMING ?= $(LAKE)/incoming/$(shell date -u +%Y%m%d)
PREPARE_SET ?=
NIGHT_INPUT = $(if $(and $(filter dicom,$(SOURCE)),$(filter-out command line environment,$(origin INCOMING))),\
  --images $$($(PY) -m xray_spark.config --config $(CONF) --get dicom_node.spool),--incoming $(INCOMING))
nightly: setup ## prepare --incremental on INCOMING (or the DICOM spool), score --new-only, worklist (cron-able)
	@[ "$(SOURCE)" != nih ] || [ -f $(INCOMING)/Data_Entry_2017.csv ] || { echo "nightly: error: $(INCOMING)/Data_Entry_2017.csv has not arrived: nothing was ingested or scored (run again when it has, or pass INCOMING=DIR)" >&2; exit 2; }
	@[ "$(SOURCE)" != nih ] || [ -d $(INCOMING)/images ] || { echo "nightly: error: $(INCOMING)/images is not a folder: nothing was ingested or scored" >&2; exit 2; }
	$(XRAY) nightly --config $(CONF) --lake $(LAKE) --source $(SOURCE) $(NIGHT_INPUT) $(PREPARE_SET) \
	  --summary-json $(LAKE)/reports/nightly-latest.json

# A demo night: 200 synthetic studies of new patients are written to lake/incoming/demo-<time>,
# then the nightly run ingests and scores them. For the demo lake only, never a real one.
nightly-demo: setup ## a synthetic night on the demo lake: 200 new studies, then make nightly
	$(PY) -m xray_spark.dev.synthetic --output $(LAKE)/incoming/demo-$(NIGHT) \
	  --images 200 --size 256 --seed $$(date +%s) --first-patient $$(( 10000000 + $$(date +%s) % 80000000 ))
	$(MAKE) nightly INCOMING=$(LAKE)/incoming/demo-$(NIGHT) PREPARE_SET="$(DEMO_SPLIT)"

# A Spark standalone cluster on this machine: a master on 127.0.0.1:7077 and two workers of
# one core each; logs, work folders and pids under CLUSTER_DIR.
CLUSTER_DIR ?= $(LAKE)/cluster
CLUSTER_WORKERS ?= 2
CLUSTER_MEMORY ?= 2g
cluster-up: setup ## start a standalone master and 2 workers on 127.0.0.1 (use CONF=conf/standalone.yaml)
	$(PY) -m xray_spark.dev.cluster up --dir $(CLUSTER_DIR) --workers $(CLUSTER_WORKERS) --cores 1 --memory $(CLUSTER_MEMORY)

cluster-down: ## stop exactly the processes that cluster-up started
	@if [ -x $(PY) ]; then $(PY) -m xray_spark.dev.cluster down --dir $(CLUSTER_DIR); fi

# The read-only SQL server (Spark's Thrift JDBC/ODBC server) over the lake's xray.* tables and
# views, on sql_server.host:port of the conf (127.0.0.1:10000); new scoring runs show without a
# restart. Its pid, log and work files are in the lake's own folder under ~/.local/share/xray-spark/run/.
sql-server: setup ## start the read-only JDBC/ODBC server on 127.0.0.1:10000 (beeline, BI tools)
	$(PY) -m xray_spark.server start --config $(CONF) --lake $(LAKE)

sql-server-stop: ## stop the server that make sql-server started
	@if [ -x $(PY) ]; then $(PY) -m xray_spark.server stop --config $(CONF) --lake $(LAKE); fi

# The DICOM storage node a PACS sends studies to (C-ECHO, C-STORE), as dicom_node.ae_title on
# dicom_node.host:port of the conf (XRAY_SPARK@127.0.0.1:11112); received files go to the spool
# (dicom_node.spool, .dicom-spool/, outside the lake), its pid and log to the spool's own folder
# under ~/.local/share/xray-spark/run/.
dicom-node: setup ## start the DICOM node (C-STORE SCP) on 127.0.0.1:11112; make nightly SOURCE=dicom reads it
	$(PY) -m xray_spark.node start --config $(CONF) --lake $(LAKE)

dicom-node-stop: ## stop the node that make dicom-node started (the associations in flight finish first)
	@if [ -x $(PY) ]; then $(PY) -m xray_spark.node stop --config $(CONF) --lake $(LAKE); fi

# The worklist web app readers sign in to, on web.host:web.port of the conf (127.0.0.1:8470);
# accounts in web.accounts (.xray-web/, outside the lake), verdicts in <lake>/verdicts/.
worklist-server: setup ## start the worklist web app on 127.0.0.1:8470 (add readers: python -m xray_spark.web add-user NAME)
	$(PY) -m xray_spark.web start --config $(CONF) --lake $(LAKE)

worklist-server-stop: ## stop the web app that make worklist-server started
	@if [ -x $(PY) ]; then $(PY) -m xray_spark.web stop --config $(CONF) --lake $(LAKE); fi

test: setup ## install, then run the test suite (PYTEST_WORKERS processes)
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

BENCH_SCALE ?= 500
bench: setup ## throughput against plain-Python limits, growth, memory (~20 min on 2 cores; bench/results)
	$(PY) bench/pipeline.py --scale $(BENCH_SCALE) --repeats 3

bench-dicom-node: setup ## the DICOM node vs dcmtk's storescp, a night from its spool vs a folder (~15 min)
	$(PY) bench/dicom_node.py

bench-node-limits: setup ## what a hostile peer makes the DICOM node hold: a 600 MiB instance, ten senders that trickle (~5 min)
	$(PY) bench/node_limits.py

bench-deliver: setup ## results to Orthanc: objects per second, a night with and without delivery, a 10,000-film backfill (~30 min)
	$(PY) bench/deliver.py

bench-web: setup ## the web app's page loads (median, p95) with 1,500 and 100,000 scored films (~5 min)
	$(PY) bench/web.py

bench-monitor: setup ## monitoring's false alarms on 30 usual nights (and 9 more deals), each shift's alerts (~7 min)
	$(PY) bench/monitor.py

bench-release: setup ## the NIH release's 112,120 rows at 1/16, 1/4 and whole, each job against its Spark peer (1-2.5 h on 2 cores; needs the NIH sample)
	$(PY) bench/release.py --sizes 16,4,1
	$(PY) bench/release_report.py --plot docs/release_growth.png

lint: setup ## ruff over the code
	$(VENV)/bin/ruff check xray_spark jobs tests bench

clean: cluster-down sql-server-stop dicom-node-stop demo-pacs-stop worklist-server-stop ## stop the local cluster, the SQL server, the node, the demo PACS and the web app, remove the lake and caches (keeps .venv and the web accounts)
	rm -rf $(LAKE) .pytest_cache spark-warehouse metastore_db derby.log $(PACS_DIR)
