"""Training speed of `conceptseg train` on the concept world, with a per-phase breakdown.

    python benchmarks/train_speed.py [--config embedded] [--batch-size 16] [--steps 8] [--threads 2] [--profile]

Reports the median seconds per phase (data generation + batching, forward, loss with matching, backward,
optimizer + EMA) over the timed steps, after two warm-up steps. Other processes on a shared machine slow it
down: check `uptime` first. --profile prints the torch.profiler table of one step's ops.
"""

import argparse
import statistics
import tempfile
import time

import torch

from conceptseg import SAM3
from conceptseg.data.synthetic import ConceptWorld
from conceptseg.model.configs import CONFIGS
from conceptseg.train.data import ConceptWorldSource, collate
from conceptseg.train.trainer import TrainConfig, Trainer, initialize_from_scratch

PHASES = ("data", "forward", "loss", "backward", "optimizer")


def timed_step(trainer: Trainer) -> dict[str, float]:
    """One training step of `trainer` (as `Trainer.train_step` does it), timing each phase."""
    marks = [time.perf_counter()]
    size = trainer.model.config.vit.image_size
    examples = [trainer.source.example(trainer.position + i) for i in range(trainer.config.batch_size)]
    batch = collate(examples, size, trainer.mask_size)
    marks.append(time.perf_counter())
    outputs = trainer.model.detect(batch.pixel_values, batch.input_ids, batch.prompt_boxes, batch.prompt_labels)
    marks.append(time.perf_counter())
    loss, _ = trainer.criterion(outputs, batch.targets)
    marks.append(time.perf_counter())
    trainer.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    marks.append(time.perf_counter())
    torch.nn.utils.clip_grad_norm_(trainer.trained, trainer.config.clip_grad_norm)
    trainer.optimizer.step()
    torch._foreach_lerp_(trainer.ema_trained, trainer.trained, 1 - trainer.config.ema_decay)
    marks.append(time.perf_counter())
    trainer.position += len(examples)
    return {phase: marks[i + 1] - marks[i] for i, phase in enumerate(PHASES)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="embedded", choices=sorted(CONFIGS))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = SAM3(CONFIGS[args.config]())
    initialize_from_scratch(model)
    source = ConceptWorldSource(ConceptWorld(size=model.config.vit.image_size, seed=0))
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model, source, TrainConfig(batch_size=args.batch_size), out)
        for _ in range(2):
            timed_step(trainer)
        if args.profile:
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
                timed_step(trainer)
            print(profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
        times = [timed_step(trainer) for _ in range(args.steps)]
    medians = {phase: statistics.median(t[phase] for t in times) for phase in PHASES}
    total = statistics.median(sum(t.values()) for t in times)
    print(f"{args.config}, batch {args.batch_size}, {args.threads} threads, median of {args.steps} steps:")
    print("  " + "  ".join(f"{phase} {seconds:.3f}s" for phase, seconds in medians.items()))
    print(f"  {total:.3f} s/step = {1 / total:.2f} steps/s = {args.batch_size / total:.1f} examples/s")


if __name__ == "__main__":
    main()
