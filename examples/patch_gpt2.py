"""fused_ops.patch() on a tiny GPT-2 from transformers: a dry-run report, then training steps.

Run it (no GPU needed: the Triton kernels run in Triton's interpreter on the CPU):

    TRITON_INTERPRET=1 .venv/bin/python examples/patch_gpt2.py

Nothing is downloaded: the model is built from a config with random weights. The model
code is transformers' own, unmodified; one line, ``fused_ops.patch(model)``, makes its
GELU, attention softmax (with eager attention) and loss run through fused kernels.
"""

import copy
import os

import torch
import transformers

import fused_ops
from fused_ops.profiling import KernelTrace


def main() -> None:
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    # No dropout, so that both runs see the same computation without sharing an RNG stream.
    config = transformers.GPT2Config(
        vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0
    )
    # "eager" attention calls F.softmax, which patch() reroutes; the default, "sdpa", keeps
    # torch's fused attention kernel, and the dry run says so.
    model = transformers.GPT2LMHeadModel._from_config(config, attn_implementation="eager")
    reference = copy.deepcopy(model)
    ids = torch.randint(0, config.vocab_size, (2, 8))

    print("Dry run (nothing changes; torch computes every result):")
    with fused_ops.patch(model, dry_run=True) as dry, torch.no_grad():
        model(ids, labels=ids)
    print(dry.report())

    print("\nThree SGD steps, torch and patched, from the same weights:")

    def train(m: torch.nn.Module) -> list[float]:
        optimizer = torch.optim.SGD(m.parameters(), lr=0.1)
        losses = []
        for _ in range(3):
            loss = m(ids, labels=ids).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        return losses

    torch_losses = train(reference)
    with fused_ops.patch(model) as handle, KernelTrace() as launches:
        print(f"(inside the patch the model prints {model.transformer.h[0].mlp.act} for NewGELUActivation())")
        fused_losses = train(model)
    print("step   torch loss   patched loss")
    for step, (torch_loss, fused_loss) in enumerate(zip(torch_losses, fused_losses, strict=True)):
        print(f"{step:4d}   {torch_loss:10.6f}   {fused_loss:12.6f}")
    print("\nWhat ran fused:")
    print(handle.report())
    backend = "Triton interpreter" if os.environ.get("TRITON_INTERPRET") == "1" else "compiled Triton or reference"
    counts = {name: launches.launch_count(name) for name in sorted(launches.kernel_names())}
    print(f"\nkernel launches ({backend}): {counts}" if counts else "\nno Triton launches recorded")


if __name__ == "__main__":
    main()
