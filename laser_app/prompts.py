"""What the policy and the reward models read of an example, with or without the policy's chat template.

Without a template (``--chat-template off``, or ``auto`` and the tokenizer has none) everyone reads the raw
prompt and the policy trains on its samples as generated. With one, the policy is asked with the
conversation rendered by its template (a plain prompt is one user turn), for sampling, evaluation, the
hidden-state context and the DPO step, and trains on each sample as the template closes the assistant turn
(end of turn included); generation ends at the end-of-turn token instead of the built-in world's stop
string. The reward models and answer checks always read the plain prompt and the reply's content, so
they judge the same conversation however the policy is formatted; pairs are exported in TRL's
conversational format.

>>> from laser_adapters.testing import chat_tokenizer
>>> from laser_app.world.tasks import Example
>>> fmt = PromptFormat.for_policy(chat_tokenizer(), "auto")
>>> ex = Example("Is 7 odd?", "yes", "yesno")
>>> fmt.policy_prompt(ex), fmt.trained(ex, "Yes.")
('<|im_start|>user\\nIs 7 odd?<|im_end|>\\n<|im_start|>assistant\\n', 'Yes.<|im_end|>\\n')
>>> PromptFormat.for_policy(chat_tokenizer(), "off").policy_prompt(ex)
'Is 7 odd?'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from laser_adapters.chat import ChatFormat, as_messages, has_chat_template
from laser_app.data import ExampleLike, messages_of
from laser_app.errors import LaserError

ChatTemplateMode = Literal["auto", "on", "off"]


def conversation_of(example: ExampleLike) -> list[dict[str, str]]:
    """The example's conversation: its ``messages`` when it has them, else its prompt as one user turn."""
    return as_messages(messages_of(example) or example.prompt)


@dataclass(frozen=True)
class PromptFormat:
    """How the policy is asked (``chat``: its template, or ``None`` for raw prompts)."""

    chat: ChatFormat | None = None

    @classmethod
    def for_policy(cls, tokenizer: Any, mode: ChatTemplateMode) -> PromptFormat:
        """``auto`` uses the tokenizer's chat template when it has one; ``on`` requires it; ``off`` never."""
        present = has_chat_template(tokenizer)
        if mode == "on" and not present:
            raise LaserError("--chat-template on, but the policy's tokenizer has no chat template; use "
                             "--chat-template auto or off, or a model whose tokenizer_config.json holds one")
        return cls(ChatFormat(tokenizer) if present and mode != "off" else None)

    @property
    def templated(self) -> bool:
        """Whether the policy is asked through its chat template."""
        return self.chat is not None

    def stop(self, stop: str | None) -> str | None:
        """The stop string generation uses: none with a template (the end-of-turn token ends a reply)."""
        return None if self.chat is not None else stop

    def policy_prompt(self, example: ExampleLike) -> str:
        """The text the policy is asked with."""
        return example.prompt if self.chat is None else self.chat.prompt(conversation_of(example))

    def trained(self, example: ExampleLike, sample: str) -> str:
        """A sample as the DPO step trains on it (with a template: the reply with its end of turn)."""
        return sample if self.chat is None else self.chat.reply(conversation_of(example), sample)

    def exported(self, example: ExampleLike, pairs: Sequence[Mapping[str, Any]], trained: Sequence[str],
                 samples: Sequence[str]) -> list[dict[str, Any]]:
        """An example's ``pairs`` for ``pairs.jsonl``: as trained without a template; with one, in TRL's
        conversational format (the conversation, and each reply's content: the sample that ``trained``,
        the texts trained on, came from)."""
        if self.chat is None:
            return [dict(p) for p in pairs]
        content = dict(zip(trained, samples, strict=True))

        def reply(text: str) -> list[dict[str, str]]:
            return [{"role": "assistant", "content": content.get(text, text)}]

        conversation = conversation_of(example)
        return [{**p, "prompt": conversation, "chosen": reply(p["chosen"]), "rejected": reply(p["rejected"])}
                for p in pairs]

    def trained_batch(self, batch: Sequence[ExampleLike], samples: Sequence[Sequence[str]]) -> list[list[str]]:
        """:meth:`trained` for every sample of every prompt of a batch."""
        if self.chat is None:
            return [list(rs) for rs in samples]
        chat = self.chat
        return [chat.replies(conversation_of(ex), rs) for ex, rs in zip(batch, samples, strict=True)]
