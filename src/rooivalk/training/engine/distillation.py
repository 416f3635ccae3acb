"""Knowledge distillation: a teacher's softened class probabilities as a second term of the training loss.

Hinton et al. (2015), with p_X = softmax(logits_X / T) for temperature T and KD weight w:

    loss = (1 - w) * plan_loss(student_logits, target) + w * T^2 * KL(p_teacher || p_student)

The soft term's gradients shrink as 1/T^2, so T^2 keeps it on the hard term's scale whatever T is. An
ensemble teacher's p_teacher is the mean of its members' p (probabilities averaged, not logits). The
teacher runs on the very batch the student sees (augmented, mixed: its probabilities describe those
inputs, whatever the target is), in eval mode and without gradients, so the term is computed per
step. It is never trained and never checkpointed: a resumed run loads it again from the plan.

The engine hands the task's `training_loss`, which stays where the student's logits are made, the
plan's criterion wrapped by `Teacher.training_loss`. Loading and checking teachers of each artifact
kind (array, image, sensor models) is rooivalk.training.teachers'.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from rooivalk.training.tasks.base import Inputs, Task

KEY = "training.distillation.teacher"  # a sensor model's: sensors.<name>.training.distillation.teacher
InputMap = Callable[[Inputs], Inputs]  # the student's batch -> the batch as one teacher takes it


def _unchanged(inputs: Inputs) -> Inputs:
    return inputs


def soft_probabilities(logits: Sequence[torch.Tensor], temperature: float) -> torch.Tensor:
    """The mean over members of softmax(logits / T): (B, C) float32, from each member's logits (B, C)."""
    probabilities = [F.softmax(member.float() / temperature, dim=1) for member in logits]
    return torch.stack(probabilities).mean(0)


def kd_term(student_logits: torch.Tensor, teacher_probabilities: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(p_teacher || softmax(student_logits / T)), the batch mean, in float32 (also under autocast)."""
    log_student = F.log_softmax(student_logits.float() / temperature, dim=1)  # (B, C)
    teacher = teacher_probabilities.float()
    # xlogy: 0 * log 0 = 0 where the teacher gives a class no probability at all.
    kl = torch.special.xlogy(teacher, teacher) - teacher * log_student  # (B, C)
    kd: torch.Tensor = temperature**2 * kl.sum(dim=1).mean()
    return kd


def distillation_loss(
    hard_loss: torch.Tensor,
    student_logits: torch.Tensor,
    teacher_probabilities: torch.Tensor,
    temperature: float,
    weight: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """((1 - w) * hard_loss + w * KD term, the KD term): `hard_loss` is the plan's loss on the same logits."""
    kd = kd_term(student_logits, teacher_probabilities, temperature)
    return (1.0 - weight) * hard_loss.float() + weight * kd, kd


@dataclass
class TeacherMember:
    """One trained model of a teacher, on the training device."""

    model: nn.Module
    source: str  # its folder or URI, for messages
    prepare: InputMap = _unchanged  # e.g. the student's standardization undone and the teacher's applied


class _DistillingCriterion(nn.Module):
    """The plan's criterion with the KD term added, for one batch whose teacher probabilities are known."""

    def __init__(self, criterion: nn.Module, teacher: Teacher, probabilities: torch.Tensor) -> None:
        super().__init__()
        self.criterion = criterion
        self.teacher = teacher
        self.probabilities = probabilities  # (B, C), float32, no grad
        self.terms: dict[str, torch.Tensor] = {}

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape != self.probabilities.shape:
            raise ValueError(
                f"{self.teacher.key}: the student's logits are {tuple(logits.shape)} but the teacher's "
                f"probabilities on the same batch are {tuple(self.probabilities.shape)}"
            )
        hard = self.criterion(logits.float(), target)
        loss, kd = distillation_loss(hard, logits, self.probabilities, self.teacher.temperature, self.teacher.weight)
        self.terms = {"kd_loss": kd.detach(), "hard_loss": hard.detach()}
        return loss


@dataclass
class Teacher:
    """A trained classifier (or an ensemble of them) whose softened probabilities the student learns."""

    members: list[TeacherMember]
    temperature: float
    weight: float
    num_classes: int
    key: str = KEY  # the plan key that named the teacher, for messages
    # The last step's loss terms (batch means), which the engine logs per epoch as train_<name>.
    last_terms: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError(f"{self.key}: no teacher model")
        for member in self.members:
            member.model.eval().requires_grad_(False)  # never trained: eval-mode dropout and BatchNorm

    def to(self, device: torch.device) -> Teacher:
        for member in self.members:
            member.model.to(device)
        return self

    @torch.no_grad()
    def probabilities(self, task: Task, inputs: Inputs) -> torch.Tensor:
        """p_teacher (B, C) float32 of a student batch: the members' softened probabilities, averaged."""
        logits = []
        for member in self.members:
            output = task.forward(member.model, member.prepare(inputs))
            if output.ndim != 2 or output.shape[1] != self.num_classes:
                raise ValueError(
                    f"{self.key}: {member.source} gives logits of shape {tuple(output.shape)} on a student batch, not "
                    f"(batch, {self.num_classes})"
                )
            logits.append(output)
        return soft_probabilities(logits, self.temperature)

    def check(self, task: Task, inputs: Inputs) -> None:
        """Run every member on a student batch once: a teacher that cannot take the student's inputs fails
        here, before training, with its key."""
        try:
            self.probabilities(task, inputs)
        except torch.OutOfMemoryError:
            raise
        except RuntimeError as error:
            sources = ", ".join(member.source for member in self.members)
            raise ValueError(f"{self.key}: {sources} cannot run on the student's batches: {error}") from None

    def training_loss(
        self, task: Task, model: nn.Module, inputs: Inputs, target: torch.Tensor, criterion: nn.Module
    ) -> torch.Tensor:
        """The task's training loss with the plan's criterion replaced by the distilling one."""
        distilling = _DistillingCriterion(criterion, self, self.probabilities(task, inputs))
        loss = task.training_loss(model, inputs, target, distilling)
        if not distilling.terms:
            raise ValueError(
                f"{self.key}: the {task.name} task's training_loss does not apply the plan's loss to class logits, so "
                "there is nothing to distill into"
            )
        self.last_terms = {name: float(value) for name, value in distilling.terms.items()}
        return loss
