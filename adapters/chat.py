"""Chat templates for the policy, TRL's way: the prompt a chat model is asked with (the conversation rendered
by its tokenizer's template, with the generation prompt), and a reply as the template closes the assistant
turn (end-of-turn included), so that sampling, the DPO step and the hidden-state context see the same
tokens as ``tokenizer.apply_chat_template(messages + [reply])``.

Prompts are tokenized elsewhere with the tokenizer's special tokens; a template that writes the BOS token
itself would then start with two, so :meth:`ChatFormat.prompt` drops a leading BOS text when the tokenizer
adds one on its own.

>>> from laser_adapters.testing import chat_tokenizer
>>> chat = ChatFormat(chat_tokenizer())
>>> chat.prompt([{"role": "user", "content": "Is 7 odd?"}])
'<|im_start|>user\\nIs 7 odd?<|im_end|>\\n<|im_start|>assistant\\n'
>>> chat.reply([{"role": "user", "content": "Is 7 odd?"}], "Yes.")
'Yes.<|im_end|>\\n'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Messages = Sequence[Mapping[str, str]]


def has_chat_template(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` carries a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def as_messages(prompt: str | Messages) -> list[dict[str, str]]:
    """A conversation from a plain prompt (one user turn) or a list of messages (copied).

    >>> as_messages("Hi")
    [{'role': 'user', 'content': 'Hi'}]
    """
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt]


@dataclass(frozen=True)
class ChatFormat:
    """The policy tokenizer's chat template as text: :meth:`prompt` and :meth:`reply`."""

    tokenizer: Any

    def __post_init__(self) -> None:
        if not has_chat_template(self.tokenizer):
            raise ValueError("the policy's tokenizer has no chat template; use --chat-template off, or a model "
                             "whose tokenizer_config.json holds one")

    def _render(self, messages: Messages, *, generation_prompt: bool) -> str:
        text = self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=generation_prompt,
                                                  tokenize=False)
        return str(text)

    def _adds_bos(self) -> bool:
        bos = getattr(self.tokenizer, "bos_token_id", None)
        if bos is None:
            return False
        ids = self.tokenizer("x")["input_ids"]
        return bool(ids) and ids[0] == bos

    def prompt(self, messages: Messages) -> str:
        """The conversation as the model is asked: rendered with the generation prompt (a leading BOS text
        dropped when the tokenizer adds BOS itself)."""
        text = self._render(messages, generation_prompt=True)
        bos = getattr(self.tokenizer, "bos_token", None)
        if bos and text.startswith(bos) and self._adds_bos():
            text = text[len(bos):]
        return text

    def reply(self, messages: Messages, content: str) -> str:
        """What the template writes after the generation prompt for an assistant turn holding ``content``:
        the content as the template renders it, then its end of turn."""
        return self.replies(messages, [content])[0]

    def replies(self, messages: Messages, contents: Sequence[str]) -> list[str]:
        """:meth:`reply` for each of several contents to one conversation (its prompt rendered once)."""
        asked = self._render(messages, generation_prompt=True)
        out = []
        for content in contents:
            full = self._render([*messages, {"role": "assistant", "content": content}], generation_prompt=False)
            if not full.startswith(asked):
                raise ValueError("the chat template renders an assistant turn that does not start with its own "
                                 "generation prompt, so replies cannot be trained as generated; use "
                                 "--chat-template off")
            out.append(full[len(asked):])
        return out

    def end_of_turn(self, messages: Messages = ({"role": "user", "content": "x"},)) -> str:
        """The text the template puts after a reply's content (e.g. ``'<|im_end|>\\n'``)."""
        return self.reply(messages, "")

    def end_of_turn_id(self) -> int | None:
        """The special token that ends an assistant turn (``None`` when the template ends it with none)."""
        ids = self.tokenizer(self.end_of_turn(), add_special_tokens=False)["input_ids"]
        special = set(self.tokenizer.all_special_ids)
        return next((int(i) for i in ids if i in special), None)

    def stop_generation_at_end_of_turn(self, model: Any) -> None:
        """Make ``model.generate`` stop at the end-of-turn token as well as at its eos."""
        eot = self.end_of_turn_id()
        config = getattr(model, "generation_config", None)
        if eot is None or config is None:
            return
        current = config.eos_token_id
        ids = [] if current is None else [current] if isinstance(current, int) else list(current)
        if eot not in ids:
            config.eos_token_id = [*ids, eot]
