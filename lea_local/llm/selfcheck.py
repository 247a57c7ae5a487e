"""`python -m lea_local.llm.selfcheck [MODEL.gguf]`: load a GGUF with the installed
llama-cpp-python and decode a multi-token prompt. A broken build (e.g. one whose CPU kernels the
machine cannot run) crashes here, at install time, instead of at the first request."""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    import llama_cpp

    print(
        f"llama-cpp-python {llama_cpp.__version__}, GPU offload: {llama_cpp.llama_supports_gpu_offload()}",
        file=sys.stderr,
    )
    if not argv:
        return 0
    model = Path(argv[0])
    llm = llama_cpp.Llama(str(model), n_ctx=256, n_gpu_layers=0, verbose=False)
    out = llm.create_completion("Bonjour, je cherche un appartement de trois pièces à Lyon.", max_tokens=3)
    print(f"decode check passed on {model.name}: {out['usage']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
