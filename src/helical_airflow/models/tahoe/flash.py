"""helical's Tahoe code imports `flash_attn` at module import, whatever the attention implementation.

helical/models/tahoe/tahoe_x1/minimal_llm_foundry/modeling_mpt.py:6 does `from flash_attn import bert_padding`
(imported by model/blocks.py:15), and TXEncoder.forward (blocks.py:277) calls `bert_padding.unpad_input` on
every batch, also with attn_impl="torch". `bert_padding` is plain PyTorch, but the `flash_attn` package's
`__init__` imports `flash_attn_interface`, which imports the compiled CUDA kernels (`import flash_attn_2_cuda`,
flash_attn 2.8.3 flash_attn_interface.py:15) unless FLASH_ATTENTION_TRITON_AMD_ENABLE=TRUE selects its Triton
backend (compiled lazily, on first call; never called with attn_impl="torch"). On a machine without the CUDA
build of flash-attn (the CPU venv installs the package with FLASH_ATTENTION_SKIP_CUDA_BUILD=TRUE) that switch
makes the import work; the CUDA build is left alone.
"""

from __future__ import annotations

import importlib.util

from ...settings import export


def has_cuda_kernels() -> bool:
    """flash-attn's compiled CUDA extension is installed (the only way attn_impl="flash" can run)."""
    return importlib.util.find_spec("flash_attn_2_cuda") is not None


def prepare_flash_attn_import() -> None:
    """Make `import flash_attn` (by helical's Tahoe modules) work here; call before importing them."""
    if importlib.util.find_spec("flash_attn") is None:
        # adapter.py calls this at import: registry.load_runner turns the ImportError into E222
        raise ImportError(
            "helical's Tahoe code imports flash_attn (modeling_mpt.py:6), which is not installed: "
            "pip install flash-attn (CPU: FLASH_ATTENTION_SKIP_CUDA_BUILD=TRUE pip install --no-build-isolation "
            "flash-attn==2.8.3.post2; CUDA: helical's prebuilt wheel, requirements_cuda.txt)"
        )
    if not has_cuda_kernels():
        export("FLASH_ATTENTION_TRITON_AMD_ENABLE", "TRUE")
