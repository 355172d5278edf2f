# Two commands set everything up on a fresh machine:
#   make demo   installs pneumo and runs the main job end to end on $(PNEUMO_DATA)
#   make test   installs pneumo with its test tools and runs the tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PNEUMO_DATA ?= data/chest_xray
OUT ?= out/demo
# CPU-sized demo: a few epochs; 'make study' runs the original study's full protocol. The pretrained model is
# EfficientNet-Lite0, whose ImageNet weights install with pneumo (the study's MobileNet needs a weights file a
# user may not have: 'make study' takes it as WEIGHTS).
DEMO_EPOCHS_CNN ?= 3
DEMO_EPOCHS_PRETRAINED ?= 2
WEIGHTS ?= ../shared/weights/mobilenet_v2_imagenet.pth
export PNEUMO_DATA

.PHONY: install install-test demo study test clean-demo

$(BIN)/pneumo: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

install: $(BIN)/pneumo

demo: install
	$(BIN)/pneumo organize "$(PNEUMO_DATA)" $(OUT)/data --skip-bad
	$(BIN)/pneumo prepare --data $(OUT)/data --holdout 0.2
	$(BIN)/pneumo show-data --data $(OUT)/data --out $(OUT)/data.png
	$(BIN)/pneumo show-augment --data $(OUT)/data --out $(OUT)/augment.png
	$(BIN)/pneumo train --model cnn --epochs $(DEMO_EPOCHS_CNN) --data $(OUT)/data --holdout 0.2 \
		--runs-dir $(OUT)/runs --name cnn --quiet $(if $(wildcard $(OUT)/runs/cnn/config.yaml),--resume $(OUT)/runs/cnn,)
	$(BIN)/pneumo train --model efficientnet_lite0 --pretrained imagenet --size 128 \
		--epochs $(DEMO_EPOCHS_PRETRAINED) --data $(OUT)/data --holdout 0.2 --runs-dir $(OUT)/runs --name lite0 --quiet \
		$(if $(wildcard $(OUT)/runs/lite0/config.yaml),--resume $(OUT)/runs/lite0,)
	$(BIN)/pneumo compare $(OUT)/runs/cnn $(OUT)/runs/lite0 --data $(OUT)/data --out $(OUT)/compare
	$(BIN)/pneumo report $(OUT)/runs/cnn $(OUT)/runs/lite0 --data $(OUT)/data --out $(OUT)/report.html
	@echo "demo done: open $(OUT)/report.html"

# The original study's protocol: cnn for 100 epochs, MobileNet for 50 (hours on a CPU; minutes on a GPU).
study: install
	$(BIN)/pneumo train --model cnn --epochs 100 --holdout 0.2 --name study-cnn
	$(BIN)/pneumo train --model mobilenet_v2 --pretrained $(WEIGHTS) --epochs 50 --holdout 0.2 --name study-mobilenet
	$(BIN)/pneumo compare runs/study-cnn runs/study-mobilenet --out out/study
	$(BIN)/pneumo report runs/study-cnn runs/study-mobilenet --out out/study/report.html

test: install
	$(BIN)/python -m pytest -q -p no:cacheprovider

clean-demo:
	rm -rf $(OUT)
