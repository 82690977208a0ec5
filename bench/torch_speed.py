"""PyTorch's training throughput on our ResNet-50, in float32 and in bfloat16 autocast: the figure a
PyTorch user would get, to set ours and Keras' against.

torchvision is not available here, so the network is written with torch.nn below, as ours is:
ResNet-50 v1 (a 7x7/2 stem with batch norm and ReLU, a 3x3/2 max pool, bottleneck stages of 3, 4,
6, 3 units with the stride on the first 1x1 convolution, as ours and Keras' ResNet50, global
average pooling and one linear layer), 64x64x1 inputs, 3 classes: 23,507,907 trainable
parameters, as ours. A step: forward (in `torch.autocast("cpu", torch.bfloat16)` for bfloat16,
PyTorch's mixed precision: float32 weights, products in bfloat16), cross-entropy, backward, Adam
(lr 0.001), with channels-last tensors (the layout PyTorch's CPU convolutions are fastest in).

PyTorch is not a dependency of the project: run this with an interpreter that has it, e.g.

    python -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch numpy
    /tmp/torchvenv/bin/python -m bench.torch_speed [--batches 16 64] [--precisions float32 bfloat16]

`bench.train_speed --torch /tmp/torchvenv/bin/python` times it in turn with ours and Keras, in a
child process it drives through `--serve` (one line per request: PRECISION BATCH STEPS; answer:
the seconds those steps took).
"""
import argparse
import sys
import time

import bench

# (depth, units, stride) of each stage, as nets.resnet_v1.RESNET50.
STAGES = [(256, 3, 1), (512, 4, 2), (1024, 6, 2), (2048, 3, 2)]
PRECISIONS = ("float32", "bfloat16")


def resnet50(num_classes=3, channels=1):
    """ResNet-50 v1 as torch.nn modules (see the module's docstring)."""
    from torch import nn

    def conv_bn(inputs, outputs, kernel, stride=1, relu=True):
        parts = [nn.Conv2d(inputs, outputs, kernel, stride, kernel // 2, bias=False),
                 nn.BatchNorm2d(outputs, eps=1e-3, momentum=0.01)]
        return parts + [nn.ReLU(inplace=True)] if relu else parts

    class Bottleneck(nn.Module):
        def __init__(self, inputs, depth, stride):
            super().__init__()
            width = depth // 4
            self.residual = nn.Sequential(*conv_bn(inputs, width, 1, stride),
                                          *conv_bn(width, width, 3),
                                          *conv_bn(width, depth, 1, relu=False))
            self.shortcut = (nn.Sequential(*conv_bn(inputs, depth, 1, stride, relu=False))
                             if stride != 1 or inputs != depth else nn.Identity())

        def forward(self, x):
            return (self.shortcut(x) + self.residual(x)).relu_()

    units, inputs = [], 64
    for depth, count, stride in STAGES:
        for index in range(count):
            units.append(Bottleneck(inputs, depth, stride if index == 0 else 1))
            inputs = depth
    return nn.Sequential(*conv_bn(channels, 64, 7, 2), nn.MaxPool2d(3, 2, 1), *units,
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(inputs, num_classes))


class TorchTrainer:
    """`step()` runs one training step of `resnet50()` on a fixed random batch."""

    def __init__(self, batch_size, precision="float32", seed=0, image_size=64):
        import torch

        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        torch.manual_seed(seed)
        self.torch, self.precision = torch, precision
        self.model = resnet50().to(memory_format=torch.channels_last).train()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=0.001)
        self.loss = torch.nn.CrossEntropyLoss()
        self.x = torch.rand(batch_size, 1, image_size, image_size).to(
            memory_format=torch.channels_last)
        self.y = torch.randint(0, 3, (batch_size,))

    def step(self):
        """One step; returns the loss (a float)."""
        torch = self.torch
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", torch.bfloat16, enabled=self.precision == "bfloat16"):
            loss = self.loss(self.model(self.x), self.y)
        loss.backward()
        self.optimizer.step()
        return loss.item()


def serve(lines=sys.stdin, out=sys.stdout):
    """Answers requests 'PRECISION BATCH STEPS', one a line, with the seconds those steps took
    (after building and warming up the trainer the first time it is asked for); stops at EOF."""
    trainers = {}
    for line in lines:
        precision, batch_size, steps = line.split()
        key = (precision, int(batch_size))
        if key not in trainers:
            trainers[key] = TorchTrainer(int(batch_size), precision)
            trainers[key].step()
        started = time.perf_counter()
        for _ in range(int(steps)):
            trainers[key].step()
        print(time.perf_counter() - started, file=out, flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=[16, 64])
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=3, help="steps per round")
    p.add_argument("--serve", action="store_true", help="answer timing requests on stdin")
    args = p.parse_args(argv)
    if args.serve:
        serve()
        return 0
    import torch

    print(f"machine: {bench.machine()}, PyTorch {torch.__version__} "
          f"({torch.backends.cpu.get_cpu_capability()})")
    rows = []
    for size in args.batches:
        trainers = {p: TorchTrainer(size, p) for p in args.precisions}
        for trainer in trainers.values():
            trainer.step()
        seconds = bench.alternate({p: t.step for p, t in trainers.items()}, args.repeats,
                                  args.steps)
        print(f"  resnet50 batch {size}: " + ", ".join(
            f"torch {p} {size / seconds[p]:.1f} img/s" for p in args.precisions), flush=True)
        rows += [["resnet50", size, p, seconds[p], size / seconds[p]] for p in args.precisions]
    print("\nPyTorch training step (forward, backward, Adam), 64x64x1, 3 classes")
    print(bench.table(["net", "batch", "precision", "s/step", "img/s"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
