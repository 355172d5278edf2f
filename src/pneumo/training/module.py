"""The LightningModule and DataModule: uint8 batches in memory, augmented on the device."""

from __future__ import annotations

import time

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from pneumo.config import TrainConfig
from pneumo.data.augment import augment
from pneumo.data.cache import PreparedData
from pneumo.labels import CLASSES
from pneumo.models import create_model, get_spec


class InMemoryImages(Dataset):
    """uint8 images (N, 1, S, S), their labels and optionally a teacher's probabilities (N, K), held in
    memory; scaling happens per batch. A batch is (images, labels) or (images, labels, teacher probabilities).

    The DataLoader fetches a whole batch with one indexing operation (``__getitems__``) instead
    of one per image followed by a collate that stacks them: on a GPU the loop's host-side time
    per step is what keeps these small models from using it (README, Speed).
    """

    def __init__(self, data: PreparedData, indices: np.ndarray, teacher: np.ndarray | None = None):
        self.images = torch.from_numpy(np.ascontiguousarray(data.images[indices]))[:, None]
        self.labels = torch.from_numpy(data.labels[indices])
        self.tensors = (self.images, self.labels) + (() if teacher is None else (torch.from_numpy(teacher).float(),))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        return tuple(tensor[index] for tensor in self.tensors)

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        # index_select copies whole rows; advanced indexing (images[index]) goes element by
        # element and is ~15x slower for a batch of uint8 images on the CPU.
        index = torch.as_tensor(indices)
        return tuple(tensor.index_select(0, index) for tensor in self.tensors)


def whole_batch(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The collate function for batches that ``InMemoryImages.__getitems__`` already made."""
    return batch


class EpochShuffle(Sampler[int]):
    """A shuffle that depends only on (seed, epoch), so a resumed run sees the same order.

    Lightning calls ``set_epoch`` before each epoch; under DDP it swaps in a
    DistributedSampler, which does the same across processes.
    """

    def __init__(self, length: int, seed: int):
        self.length, self.seed, self.epoch = length, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.length, generator=generator).tolist())


class XrayDataModule(L.LightningDataModule):
    """Train and validation sets from prepared data and a split; ``teacher``: probabilities (len(train_idx), K)
    of a teacher for the training images, when distilling."""

    def __init__(self, data: PreparedData, train_idx: np.ndarray, val_idx: np.ndarray, batch_size: int, seed: int,
                 pin_memory: bool | None = None, teacher: np.ndarray | None = None):
        super().__init__()
        self.train_set = InMemoryImages(data, train_idx, teacher)
        self.val_set = InMemoryImages(data, val_idx)
        self.batch_size = batch_size
        self.seed = seed
        self.pin_memory = pin_memory  # None: when training on a GPU

    def _loader(self, dataset: InMemoryImages, batch_size: int, **options) -> DataLoader:
        # Page-locked batches make the copy to a GPU asynchronous (Lightning asks for
        # non_blocking), so the host can queue the next step while the GPU runs this one.
        pin = self.pin_memory
        if pin is None:
            pin = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        return DataLoader(dataset, batch_size=batch_size, collate_fn=whole_batch, pin_memory=pin, **options)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, sampler=EpochShuffle(len(self.train_set), self.seed),
                            drop_last=len(self.train_set) > self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, max(self.batch_size, 128))


def class_weights(labels: np.ndarray, mode: str) -> torch.Tensor | None:
    """'balanced' weights n / (k * count_c), as scikit-learn's compute_class_weight; None for 'none'."""
    if mode == "none":
        return None
    counts = np.bincount(labels, minlength=len(CLASSES)).astype(np.float64)
    return torch.tensor(len(labels) / (len(CLASSES) * np.maximum(counts, 1)), dtype=torch.float32)


class Classifier(L.LightningModule):
    """A registered model trained with cross-entropy; batches arrive as uint8 and are scaled here."""

    def __init__(self, config: dict, weights: list[float] | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.config = TrainConfig.from_dict(config)
        # channels_last weights to match the channels_last batches (on_after_batch_transfer): with
        # only the input in that layout, each convolution converts one of them on every step.
        self.model = create_model(self.config.model.name, num_classes=len(CLASSES),
                                  pretrained=self.config.model.pretrained)
        self.model.to(memory_format=torch.channels_last)
        if self.config.hardware.compile != "off":
            # In place, so the state_dict keeps its names (checkpoints, bundles); compiled on first use.
            self.model.compile(mode=self.config.hardware.compile)
        self.classifier_prefix = "model." + get_spec(self.config.model.name).classifier
        self.augment = self.config.augment
        self.register_buffer("class_weight", torch.tensor(weights) if weights else torch.ones(len(CLASSES)))
        self._generator: torch.Generator | None = None
        self._epoch_started = self._last_step = 0.0
        self._epoch_images = 0
        self._sums = torch.zeros(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 1, S, S) in [0, 1]
        return self.model(x)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, *targets = batch
        images = images.float().div_(255.0)  # the study's 1/255 rescaling
        if self.trainer.training and self.augment.enabled:
            if self._generator is None or self._generator.device != images.device:
                seed = self.config.optim.seed * 1000 + self.global_rank + 7919 * self.current_epoch
                self._generator = torch.Generator(device=images.device).manual_seed(seed)
            images = augment(images, self.augment, self._generator)
        return images.contiguous(memory_format=torch.channels_last), *targets

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor, smoothing: float,
              teacher: torch.Tensor | None = None) -> torch.Tensor:
        """Cross-entropy with the labels; when distilling, blended with the KL divergence from the teacher's
        probabilities (B, K), both softened by the distillation temperature (scaled by T^2 so that its
        gradients keep their size as T changes; Hinton et al. 2015)."""
        hard = F.cross_entropy(logits, labels, weight=self.class_weight, label_smoothing=smoothing)
        if teacher is None:
            return hard
        options = self.config.distill
        soft_teacher = F.softmax(teacher.clamp_min(1e-8).log() / options.temperature, dim=1)
        soft = F.kl_div(F.log_softmax(logits / options.temperature, dim=1), soft_teacher, reduction="batchmean")
        return (1 - options.weight) * hard + options.weight * options.temperature ** 2 * soft

    def on_train_epoch_start(self) -> None:
        frozen = self.current_epoch < self.config.optim.freeze_epochs
        for name, parameter in self.named_parameters():
            parameter.requires_grad_(not frozen or name.startswith(self.classifier_prefix))
        # Fresh streams per epoch (augmentation here, dropout and mixup at the first batch) make a run
        # resumed after a kill train exactly like an uninterrupted one.
        self._generator = None
        self._epoch_started, self._epoch_images = time.perf_counter(), 0
        self._sums = torch.zeros(2, device=self.device)  # loss x images, correct predictions

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        if batch_idx == 0:
            # Seeded here, not at epoch start: a fresh run and a resumed one create the epoch's
            # DataLoader iterator (which draws its base seed from this generator) at different points.
            torch.manual_seed(self.config.optim.seed * 100_003 + self.current_epoch * 101 + self.global_rank)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels, *teacher = batch
        teacher = teacher[0] if teacher else None
        if self.config.optim.mixup > 0:
            # Mixup (Zhang et al. 2018): blend each image with a partner from the same batch and
            # the loss with the same weight. Random numbers come from torch's generator, reseeded
            # every epoch, so resumed runs stay reproducible.
            share = float(torch.distributions.Beta(self.config.optim.mixup, self.config.optim.mixup).sample())
            partner = torch.randperm(len(labels), device=images.device)
            logits = self(share * images + (1 - share) * images[partner])
            partner_teacher = None if teacher is None else teacher[partner]
            loss = (share * self._loss(logits, labels, self.config.optim.label_smoothing, teacher)
                    + (1 - share) * self._loss(logits, labels[partner], self.config.optim.label_smoothing,
                                               partner_teacher))
        else:
            logits = self(images)
            loss = self._loss(logits, labels, self.config.optim.label_smoothing, teacher)
        # Sums on the device, logged once per epoch: each self.log call costs ~0.8 ms of Lightning
        # bookkeeping on the 2-core CPU, against a ~5 ms step for the cnn on an H100.
        self._sums += torch.stack([loss.detach().float() * len(labels), (logits.argmax(1) == labels).sum().float()])
        self._epoch_images += len(labels)
        self._last_step = time.perf_counter()
        if self.trainer.is_last_batch:
            mean_loss, accuracy = self._sums / self._epoch_images
            self.log("train_loss", mean_loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
            self.log("train_acc", accuracy, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    @property
    def images_per_second(self) -> float:
        """Training images per second of this epoch so far, or of the last one during validation (this process)."""
        return self._epoch_images / max(self._last_step - self._epoch_started, 1e-9)

    def validation_step(self, batch, batch_idx: int) -> None:
        images, labels = batch
        # The model's own forward, not its compiled call: validation is a few batches an epoch,
        # and in eval mode, with a smaller last batch, it would need graphs (and CUDA graphs) of
        # its own, whose compilation costs more than it saves.
        logits = self.model.forward(images)
        # Validation loss is the plain categorical cross-entropy the study reports.
        loss = F.cross_entropy(logits, labels)
        self.log("val_loss", loss, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("val_acc", (logits.argmax(1) == labels).float().mean(), on_epoch=True, prog_bar=True, sync_dist=True)

    def configure_optimizers(self):
        config = self.config
        head = [p for n, p in self.named_parameters() if n.startswith(self.classifier_prefix)]
        body = [p for n, p in self.named_parameters() if not n.startswith(self.classifier_prefix)]
        groups = [{"params": body, "lr": config.optim.lr * config.optim.backbone_lr_scale},
                  {"params": head, "lr": config.optim.lr}]
        # One fused kernel for the whole update on a GPU instead of a few per parameter group.
        fused = {"fused": True} if self.device.type == "cuda" else {}
        if config.optim.optimizer == "adam":
            optimizer = torch.optim.Adam(groups, lr=config.optim.lr, weight_decay=config.optim.weight_decay, **fused)
        elif config.optim.optimizer == "adamw":
            optimizer = torch.optim.AdamW(groups, lr=config.optim.lr, weight_decay=config.optim.weight_decay, **fused)
        else:
            optimizer = torch.optim.SGD(groups, lr=config.optim.lr, momentum=0.9, nesterov=True,
                                        weight_decay=config.optim.weight_decay, **fused)
        if config.optim.schedule == "none":
            return optimizer
        if config.optim.schedule == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.optim.epochs)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
        steps = self.trainer.estimated_stepping_batches
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in groups], total_steps=int(steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
