"""A text-only causal LM: the language backbone of a VLM (`--backbone`) and the local judge.

Both jobs need the same thing: load a transformers causal LM (a folder or a cached hub id, never
downloaded without `--online`), put it on the device by the eval's rules (`auto` = the GPU when
visible, bf16 there and fp32 on CPU), and generate greedily for a batch of user turns, with the
checkpoint's own chat template when it has one (an instruct judge expects it; a base LM such as
Vicuna's ancestor Llama has none and gets the plain text). Left padding, so one batch of prompts
of different lengths decodes like each prompt alone.

The backbone answers through `generate(Prompt(text, None))`, the same signature the VLM offers,
so the evaluation batches need no special path: a text LM is a model that has no image input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mbpo_bench.errors import UserError, exception_line

if TYPE_CHECKING:
    import torch

    from mbpo_bench.models.protocol import Prompt


@dataclass
class Generated:
    text: str
    prompt_tokens: int
    completion_tokens: int


def load_text_lm(
    path_or_id: str,
    *,
    device: str = "auto",
    dtype: str = "auto",
    local_files_only: bool = True,
    trust_remote_code: bool = False,
    role: str = "backbone",
) -> TextLM:
    """Load a causal LM; any failure is one line naming the model and its role."""
    from mbpo_bench.models.loading import resolve_device, resolve_dtype, resolve_folder

    folder = resolve_folder(path_or_id, local_files_only=local_files_only)
    try:
        import transformers as tf

        dev = resolve_device(device)
        tokenizer = tf.AutoTokenizer.from_pretrained(
            folder, trust_remote_code=trust_remote_code, padding_side="left"
        )
        model = tf.AutoModelForCausalLM.from_pretrained(
            folder, dtype=resolve_dtype(dtype, dev), trust_remote_code=trust_remote_code
        )
        model = model.to(dev)  # type: ignore[arg-type]
    except UserError:
        raise
    except Exception as exc:
        raise UserError(
            f"{role} model '{path_or_id}' failed to load as a causal LM "
            f"({exception_line(exc, 200)}) — pass a text-only checkpoint folder or a cached hub id"
        ) from exc
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return TextLM(name=str(path_or_id), model=model, tokenizer=tokenizer)


@dataclass
class TextLM:
    name: str
    model: Any
    tokenizer: Any
    family: str = "text"
    image_size: int = 0  # no image input
    processor: Any = None
    protocol: str = "native"  # its own chat template; recorded like a VLM's, no image geometry

    @property
    def device(self) -> torch.device:
        return self.model.device  # type: ignore[no-any-return]

    def render(self, text: str) -> str:
        """The user turn as the checkpoint expects it (its chat template, else the text)."""
        if getattr(self.tokenizer, "chat_template", None):
            return str(
                self.tokenizer.apply_chat_template(
                    [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
                )
            )
        return text

    def complete(
        self, texts: Sequence[str], *, max_new_tokens: int, batch_size: int = 8
    ) -> list[Generated]:
        """Greedy completions of user turns, in order, with token counts."""
        import torch

        out: list[Generated] = []
        for start in range(0, len(texts), batch_size):
            chunk = [self.render(t) for t in texts[start : start + batch_size]]
            enc = self.tokenizer(
                chunk, return_tensors="pt", padding=True, add_special_tokens=False
            ).to(self.device)
            with torch.no_grad():
                ids = self.model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            new = ids[:, enc["input_ids"].shape[1] :]
            for k in range(len(chunk)):
                tokens = new[k]
                eos = self.tokenizer.eos_token_id
                n_new = int((tokens != self.tokenizer.pad_token_id).sum())
                if eos is not None and (tokens == eos).any():
                    n_new = int((tokens == eos).nonzero()[0, 0]) + 1
                out.append(
                    Generated(
                        text=self.tokenizer.decode(tokens, skip_special_tokens=True),
                        prompt_tokens=int(enc["attention_mask"][k].sum()),
                        completion_tokens=n_new,
                    )
                )
        return out

    def generate(
        self,
        prompts: Sequence[Prompt],
        *,
        max_new_tokens: int = 8,
        batch_size: int = 16,
        **_: Any,
    ) -> list[list[str]]:
        """The VLM `generate` signature for text-only prompts (greedy; sampling settings of a
        task are ignored: the backbone probe is a point measurement like the blind probe)."""
        if any(p.image is not None for p in prompts):
            raise ValueError("a text-only language model got an image")
        done = self.complete([p.text for p in prompts], max_new_tokens=max_new_tokens,
                             batch_size=batch_size)  # fmt: skip
        return [[g.text] for g in done]
