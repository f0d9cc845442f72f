# detseg developer targets. `make test` and `make demo` on a fresh clone do all the setup.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_DIR := runs/demo
DETSEG := $(VENV)/bin/detseg
SHAPES := data/shapes
SHAPES_BIG := data/shapes-big
SHAPES_6K := data/shapes-6k
SHAPES_6K_B := data/shapes-6k-b
SHAPES_20K := data/shapes-20k
WEIGHTS_RUNS := runs/weights
# One training process per core at most; each uses one thread.
TRAIN := $(DETSEG) train --backbone tiny --dataset shapes --seed 0 --threads 1
# The U-Net runs: whole images at 128 px, AdamW, two threads and one loader worker.
UNET := $(DETSEG) train --model unet --backbone tiny --dataset shapes --batch-size 8 --imgsz 128 \
	--optimizer adamw --weight-decay 1e-4 --eval-max-images 50 --seed 0 --threads 2 --workers 1
# The last U-Net and SegNet runs: full 256 px, batch 32, on a GPU (GPU_DEVICE=cpu runs them, slowly).
GPU_DEVICE ?= cuda
GPU_TRAIN := $(DETSEG) train --backbone tiny --dataset shapes --imgsz 256 --batch-size 32 \
	--optimizer adamw --weight-decay 1e-4 --lr 1e-3 --augment light --eval-max-images 50 --threads 4 \
	--device $(GPU_DEVICE)
SHIP := $(PY) -c 'import sys; from detseg.engine.checkpointing import ship_weights; ship_weights(sys.argv[1], sys.argv[2])'
# the final epoch's EMA weights of a last.pt (where the 50 val images picked an earlier best.pt)
SHIP_EMA := $(PY) -c 'import sys; from detseg.engine.checkpointing import ship_weights; ship_weights(sys.argv[1], sys.argv[2], ema=True)'
# Continuing runs on the 6000 shapes images: EMA of the weights, AdamW, light augmentation.
TRAIN_6K := $(DETSEG) train --backbone tiny --dataset shapes --threads 2 --workers 1 \
	--data-root $(SHAPES_6K) --imgsz 256 --optimizer adamw --weight-decay 1e-4 \
	--warmup-epochs 0.05 --augment light --ema --eval-max-images 50

.PHONY: install test demo lint bench weights clean

$(STAMP): pyproject.toml tests/oracles.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps -r tests/oracles.txt
	touch $(STAMP)

install: $(STAMP)

# The README's test command and CI's: lint (ruff, mypy), then the suite.
test: lint
	$(PY) -m pytest -q

# ruff, then mypy over detseg/ and cli/ ([tool.mypy] in pyproject.toml).
lint: $(STAMP)
	$(PY) -m ruff check detseg cli tests bench
	$(PY) -m mypy

bench: $(STAMP)
	$(PY) bench/eval_speed.py --quick
	$(PY) bench/infer_speed.py

# Annotated images from the shipped shapes weights, offline: runs/demo/{detect,segment}/.
# --conf 0.9: on 40 fresh shapes images (seed 11) shapes-mask_rcnn finds 112 of 125 objects
# (IoU >= 0.5, same class) with 7 wrong boxes, against 121 with 106 wrong at 0.3 (0.8: 113
# with 19 wrong).
demo: $(STAMP)
	rm -rf $(DEMO_DIR)
	$(DETSEG) dataset shapes --out $(DEMO_DIR)/data --train 0 --val 4 --seed 7
	$(DETSEG) detect $(DEMO_DIR)/data/images/val --weights shapes-mask_rcnn --conf 0.9 \
		--out $(DEMO_DIR)/detect
	$(DETSEG) segment $(DEMO_DIR)/data/images/val --weights shapes-unet --out $(DEMO_DIR)/segment
	@echo "demo images: $(DEMO_DIR)/detect and $(DEMO_DIR)/segment"

# Retrain the shipped shapes checkpoints (weights/README.md gives times and metrics).
weights: $(STAMP)
	$(DETSEG) dataset shapes --out $(SHAPES) --train 800 --val 50 --seed 0
	$(DETSEG) dataset shapes --out $(SHAPES_BIG) --train 3000 --val 50 --seed 2
	$(DETSEG) dataset shapes --out $(SHAPES_6K) --train 6000 --val 50 --seed 3
	$(DETSEG) dataset shapes --out $(SHAPES_6K_B) --train 6000 --val 50 --seed 4
	$(DETSEG) dataset shapes --out $(SHAPES_20K) --train 20000 --val 50 --seed 3
	rm -rf $(WEIGHTS_RUNS)
	$(UNET) --data-root $(SHAPES) --epochs 45 --lr 1e-3 --warmup-epochs 0.3 --augment none \
		--out $(WEIGHTS_RUNS)/shapes-unet
	$(UNET) --data-root $(SHAPES) --weights $(WEIGHTS_RUNS)/shapes-unet/best.pt --epochs 15 \
		--lr 5e-4 --warmup-epochs 0.1 --augment none --out $(WEIGHTS_RUNS)/shapes-unet-ft
	$(UNET) --data-root $(SHAPES_BIG) --weights $(WEIGHTS_RUNS)/shapes-unet-ft/best.pt --epochs 8 \
		--lr 5e-4 --warmup-epochs 0.05 --augment light --out $(WEIGHTS_RUNS)/shapes-unet-big
	$(UNET) --data-root $(SHAPES_BIG) --weights $(WEIGHTS_RUNS)/shapes-unet-big/best.pt --epochs 16 \
		--lr 4e-4 --warmup-epochs 0.05 --augment light --out $(WEIGHTS_RUNS)/shapes-unet-big2
	$(GPU_TRAIN) --model unet --data-root $(SHAPES_6K) --weights $(WEIGHTS_RUNS)/shapes-unet-big2/best.pt \
		--epochs 7 --warmup-epochs 0.2 --workers 14 --seed 3 --out $(WEIGHTS_RUNS)/shapes-unet-gpu
	$(SHIP) $(WEIGHTS_RUNS)/shapes-unet-gpu/best.pt shapes-unet
	$(TRAIN) --model mask_rcnn --data-root $(SHAPES) --weights $(WEIGHTS_RUNS)/shapes-unet-big/best.pt \
		--imgsz 256 --epochs 12 --batch-size 4 --optimizer adamw --lr 1e-3 --weight-decay 1e-4 \
		--warmup-epochs 0.5 --augment light --roi-samples 128 --eval-max-images 20 \
		--model-option rpn_pre_nms_top_n_test=300 --model-option rpn_post_nms_top_n_test=100 \
		--out $(WEIGHTS_RUNS)/shapes-mask_rcnn
	$(TRAIN_6K) --model mask_rcnn --seed 5 --weights $(WEIGHTS_RUNS)/shapes-mask_rcnn/best.pt \
		--epochs 2 --batch-size 4 --lr 2e-4 --roi-samples 128 --out $(WEIGHTS_RUNS)/shapes-mask_rcnn-6k
	$(TRAIN_6K) --model mask_rcnn --seed 11 --weights $(WEIGHTS_RUNS)/shapes-mask_rcnn-6k/best.pt \
		--imgsz 320 --epochs 1 --batch-size 4 --lr 1.5e-4 --roi-samples 128 \
		--out $(WEIGHTS_RUNS)/shapes-mask_rcnn-320
	$(SHIP) $(WEIGHTS_RUNS)/shapes-mask_rcnn-320/best.pt shapes-mask_rcnn
	$(TRAIN) --model segnet --data-root $(SHAPES_BIG) --weights $(WEIGHTS_RUNS)/shapes-unet-big2/best.pt \
		--epochs 8 --batch-size 8 --imgsz 128 --optimizer adamw --lr 1e-3 --weight-decay 1e-4 \
		--warmup-epochs 0.1 --augment light --eval-max-images 50 --workers 1 \
		--out $(WEIGHTS_RUNS)/shapes-segnet
	$(DETSEG) train --model segnet --backbone tiny --dataset shapes --seed 1 --threads 1 --workers 1 \
		--weights $(WEIGHTS_RUNS)/shapes-segnet/best.pt --data-root $(SHAPES_BIG) --imgsz 128 \
		--epochs 22 --batch-size 8 --optimizer adamw --lr 5e-4 --weight-decay 1e-4 \
		--warmup-epochs 0.05 --augment light --eval-max-images 50 \
		--out $(WEIGHTS_RUNS)/shapes-segnet2
	$(GPU_TRAIN) --model segnet --data-root $(SHAPES_20K) --weights $(WEIGHTS_RUNS)/shapes-segnet2/best.pt \
		--epochs 1 --warmup-epochs 0.2 --workers 12 --seed 3 --out $(WEIGHTS_RUNS)/shapes-segnet-gpu
	$(GPU_TRAIN) --model segnet --data-root $(SHAPES_20K) --weights $(WEIGHTS_RUNS)/shapes-segnet-gpu/best.pt \
		--epochs 6 --warmup-epochs 0.1 --workers 12 --seed 4 --out $(WEIGHTS_RUNS)/shapes-segnet-gpu2
	$(SHIP) $(WEIGHTS_RUNS)/shapes-segnet-gpu2/best.pt shapes-segnet
	$(DETSEG) train --model deeplabv3plus --backbone tiny --dataset shapes --seed 0 --threads 2 \
		--workers 1 --data-root $(SHAPES_6K) --weights $(WEIGHTS_RUNS)/shapes-segnet-gpu2/best.pt \
		--imgsz 256 --epochs 2 --batch-size 8 --optimizer adamw --lr 1e-3 --weight-decay 1e-4 \
		--warmup-epochs 0.1 --augment light --eval-max-images 50 \
		--model-option 'aspp_rates=[3,6,9]' --out $(WEIGHTS_RUNS)/shapes-deeplabv3plus
	$(TRAIN_6K) --model deeplabv3plus --seed 6 --weights $(WEIGHTS_RUNS)/shapes-deeplabv3plus/best.pt \
		--epochs 5 --batch-size 8 --lr 5e-4 --model-option 'aspp_rates=[6,12,18]' \
		--out $(WEIGHTS_RUNS)/shapes-deeplabv3plus-2
	$(TRAIN_6K) --model deeplabv3plus --seed 10 --weights $(WEIGHTS_RUNS)/shapes-deeplabv3plus-2/best.pt \
		--imgsz 320 --epochs 2 --batch-size 8 --lr 3e-4 --out $(WEIGHTS_RUNS)/shapes-deeplabv3plus-320
	$(TRAIN_6K) --model deeplabv3plus --seed 17 --weights $(WEIGHTS_RUNS)/shapes-deeplabv3plus-320/best.pt \
		--imgsz 320 --epochs 4 --batch-size 8 --lr 3e-4 --model-option loss_top_k=0.2 \
		--out $(WEIGHTS_RUNS)/shapes-deeplabv3plus-hpm
	$(SHIP_EMA) $(WEIGHTS_RUNS)/shapes-deeplabv3plus-hpm/last.pt shapes-deeplabv3plus
	$(TRAIN_6K) --model deeplabv3plus --seed 19 --data-root $(SHAPES_6K_B) \
		--weights weights/shapes-deeplabv3plus.pt --imgsz 320 --epochs 3 --batch-size 8 --lr 2e-4 \
		--model-option loss_top_k=0.2 --out $(WEIGHTS_RUNS)/shapes-deeplabv3plus-fresh
	$(SHIP) $(WEIGHTS_RUNS)/shapes-deeplabv3plus-fresh/best.pt shapes-deeplabv3plus
	$(TRAIN) --model faster_rcnn --weights $(WEIGHTS_RUNS)/shapes-mask_rcnn/last.pt \
		--data-root $(SHAPES) --imgsz 256 --epochs 4 --batch-size 4 --optimizer adamw --lr 3e-4 \
		--weight-decay 1e-4 --warmup-epochs 0.2 --augment light --roi-samples 128 --eval-max-images 20 \
		--out $(WEIGHTS_RUNS)/shapes-faster_rcnn
	$(DETSEG) train --model faster_rcnn --backbone tiny --dataset shapes --seed 1 --threads 1 \
		--weights $(WEIGHTS_RUNS)/shapes-faster_rcnn/best.pt --data-root $(SHAPES) --imgsz 256 \
		--epochs 4 --batch-size 4 --optimizer adamw --lr 1.5e-4 --weight-decay 1e-4 \
		--warmup-epochs 0.1 --augment light --roi-samples 128 --eval-max-images 20 \
		--out $(WEIGHTS_RUNS)/shapes-faster_rcnn2
	$(TRAIN_6K) --model faster_rcnn --seed 5 --weights $(WEIGHTS_RUNS)/shapes-faster_rcnn2/best.pt \
		--epochs 2 --batch-size 4 --lr 2e-4 --roi-samples 128 --out $(WEIGHTS_RUNS)/shapes-faster_rcnn-6k
	$(TRAIN_6K) --model faster_rcnn --seed 15 --weights $(WEIGHTS_RUNS)/shapes-faster_rcnn-6k/best.pt \
		--epochs 3 --batch-size 4 --lr 1.5e-4 --roi-samples 128 --out $(WEIGHTS_RUNS)/shapes-faster_rcnn-6k2
	$(SHIP) $(WEIGHTS_RUNS)/shapes-faster_rcnn-6k2/best.pt shapes-faster_rcnn
	$(DETSEG) train --model yolo --backbone tiny --dataset shapes --seed 0 --threads 2 --workers 1 \
		--data-root $(SHAPES_6K) --weights $(WEIGHTS_RUNS)/shapes-unet-gpu/best.pt --imgsz 256 \
		--epochs 10 --batch-size 8 --optimizer adamw --lr 2e-3 --weight-decay 5e-4 \
		--warmup-epochs 0.2 --augment light --ema --eval-max-images 50 \
		--out $(WEIGHTS_RUNS)/shapes-yolo
	$(SHIP) $(WEIGHTS_RUNS)/shapes-yolo/best.pt shapes-yolo
	$(TRAIN) --model ssd --data-root $(SHAPES) --weights $(WEIGHTS_RUNS)/shapes-unet-big2/best.pt \
		--imgsz 256 --epochs 15 --batch-size 8 --optimizer adamw --lr 1e-3 --weight-decay 1e-4 \
		--warmup-epochs 0.5 --augment light --eval-max-images 20 \
		--model-option 'scales=[0.04,0.1,0.25,0.4,0.55,0.7,0.85]' \
		--out $(WEIGHTS_RUNS)/shapes-ssd
	$(DETSEG) train --model ssd --backbone tiny --dataset shapes --seed 1 --threads 1 --workers 1 \
		--weights $(WEIGHTS_RUNS)/shapes-ssd/best.pt --data-root $(SHAPES_BIG) --imgsz 256 \
		--epochs 10 --batch-size 8 --optimizer adamw --lr 5e-4 --weight-decay 1e-4 \
		--warmup-epochs 0.05 --augment light --eval-max-images 50 \
		--model-option 'scales=[0.04,0.1,0.25,0.4,0.55,0.7,0.85]' \
		--out $(WEIGHTS_RUNS)/shapes-ssd-big
	$(TRAIN_6K) --model ssd --seed 7 --weights $(WEIGHTS_RUNS)/shapes-ssd-big/best.pt --epochs 3 \
		--batch-size 8 --lr 2.5e-4 --out $(WEIGHTS_RUNS)/shapes-ssd-6k
	$(TRAIN_6K) --model ssd --seed 8 --weights $(WEIGHTS_RUNS)/shapes-ssd-6k/best.pt --epochs 3 \
		--batch-size 8 --lr 1.5e-4 --out $(WEIGHTS_RUNS)/shapes-ssd-6k2
	$(TRAIN_6K) --model ssd --seed 9 --weights $(WEIGHTS_RUNS)/shapes-ssd-6k2/best.pt --epochs 2 \
		--batch-size 8 --lr 1e-4 --out $(WEIGHTS_RUNS)/shapes-ssd-6k3
	$(TRAIN_6K) --model ssd --seed 13 --weights $(WEIGHTS_RUNS)/shapes-ssd-6k3/best.pt --imgsz 320 \
		--epochs 3 --batch-size 8 --lr 2.5e-4 --out $(WEIGHTS_RUNS)/shapes-ssd-320
	$(SHIP) $(WEIGHTS_RUNS)/shapes-ssd-320/best.pt shapes-ssd

clean:
	rm -rf $(VENV) runs .pytest_cache build *.egg-info
