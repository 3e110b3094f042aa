"""The optional Hugging Face VLM front end (``vlm:`` in the config), loaded from local files only.

The paper's working memory comes from a 7B Prismatic VLM: perceptual tokens are the vision
backbone's patch features, the cognitive token is the LLM's last hidden state at the final
(EOS) position of the prompt. With ``vlm: <local path or cached model id>`` this adapter does
the same with any ``transformers`` model that has a processor taking ``images`` and ``text`` and
returns ``hidden_states`` (LLaVA-style and most image-text-to-text models):

- perceptual: the vision tower's last hidden state (``image_hidden_states`` / the model's
  ``get_image_features`` when it has one), as (N_v, C_v) patch features;
- cognitive: the last layer's hidden state at the last attended position, (H,).

``from_pretrained(..., local_files_only=True)``: nothing is ever downloaded; a model that is not
on disk raises ``ValueError``. The default (``vlm: null``) never imports this module.
"""

from __future__ import annotations

import numpy as np
import torch


class HFVisionLanguage:
    def __init__(self, name: str, device: str = "cpu", prompt: str = "What is in view? Answer:") -> None:
        try:
            from transformers import AutoModelForImageTextToText, AutoProcessor

            self.processor = AutoProcessor.from_pretrained(name, local_files_only=True)
            self.model = AutoModelForImageTextToText.from_pretrained(name, local_files_only=True).to(device).eval()
        except (OSError, ValueError, ImportError) as error:
            raise ValueError(f"vlm {name!r} could not be loaded from local files (it is never downloaded): {error}") from error
        self.device, self.prompt = device, prompt
        probe = self.encode(np.zeros((32, 32, 3), np.uint8), "")
        self.vision_dim, self.text_dim = probe[0].shape[-1], probe[1].shape[-1]

    @torch.inference_mode()
    def encode(self, rgb: np.ndarray, semantics: str) -> tuple[np.ndarray, np.ndarray]:
        """One frame and the text of what it perceived -> (patches (N_v, C_v), hidden (H,))."""
        from PIL import Image

        text = f"{self.prompt} {semantics}".strip()
        if hasattr(self.processor, "apply_chat_template") and getattr(self.processor, "chat_template", None):
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
            text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = self.processor(images=Image.fromarray(rgb), text=text, return_tensors="pt").to(self.device)
        out = self.model(**inputs, output_hidden_states=True)
        hidden = out.hidden_states[-1][0]
        mask = inputs.get("attention_mask")
        last = int(mask[0].nonzero().max()) if mask is not None else hidden.shape[0] - 1
        patches = getattr(out, "image_hidden_states", None)
        if patches is None and hasattr(self.model, "get_image_features"):
            patches = self.model.get_image_features(pixel_values=inputs["pixel_values"])
        if isinstance(patches, (list, tuple)):
            patches = patches[0]
        if patches is None:
            raise ValueError("this vlm exposes no image features (image_hidden_states / get_image_features)")
        patches = patches.reshape(-1, patches.shape[-1])
        return patches.float().cpu().numpy(), hidden[last].float().cpu().numpy()
