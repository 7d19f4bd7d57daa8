"""The chat keeps one model state across turns and feeds only what is new: after any mix of
turns (finished, cut by the token limit, interrupted, reloaded, with a picture) the state
must equal a fresh prefill of exactly the tokens the conversation fed."""
import copy
from pathlib import Path

import numpy as np
import pytest

from raxcli.chat import render_chat
from raxcli.conversation import Conversation, Message
from raxcli.loader import load_model
from raxcli.session import ChatOptions, ChatSession, ContextFull, PromptInterrupted

FIXTURES = Path(__file__).parent / "fixtures"
F32 = FIXTURES / "gguf" / "tiny-vk2-F32.gguf"
VISION_MODEL = FIXTURES / "vision" / "gguf" / "tiny-vl-BF16.gguf"
VISION_MMPROJ = FIXTURES / "vision" / "gguf" / "mmproj-tiny-vl-F16.gguf"
PICTURE = FIXTURES / "vision" / "media" / "square.png"


@pytest.fixture(scope="module")
def loaded():
    return load_model(F32)


def session(loaded, **options) -> ChatSession:
    return ChatSession(loaded, ChatOptions(**{"max_tokens": 12, "max_context": 4096, "greedy": True, **options}))


def answer(chat: ChatSession, text: str, **kwargs):
    steps = list(chat.ask(Message("user", text), **kwargs))
    return steps[-1]


def assert_state_matches_fresh_prefill(loaded, chat: ChatSession, tol=2e-4):
    """Next-token logits from the kept state equal those after prefilling chat.stream anew."""
    model = loaded.model
    assert chat.state.n_tokens == len(chat.stream)
    fresh = model.new_state()
    model.prefill(chat.stream, fresh)
    assert fresh.next_position == chat.state.next_position
    probe = chat.carry[0] if chat.carry else 0
    kept_logits = model.decode(probe, copy.deepcopy(chat.state))     # the chat goes on with its own
    fresh_logits = model.decode(probe, fresh)
    scale = float(np.abs(fresh_logits).max())
    assert float(np.abs(kept_logits - fresh_logits).max()) <= tol * max(1.0, scale)


def test_two_turns_reuse_the_state_and_equal_a_fresh_prefill_of_the_same_tokens(loaded):
    chat = session(loaded)
    answer(chat, "Hello, how are you?")
    n_after_first = chat.state.n_tokens
    last = answer(chat, "And what is two plus two?")
    # the second turn fed only the new tokens on top of the first
    assert last.stats["prompt_tokens"] < len(chat.stream) - n_after_first + 4
    assert_state_matches_fresh_prefill(loaded, chat)

    text = loaded.tokenizer.decode(chat.stream)
    first_reply = chat.conversation.messages[1]
    # the first answer's reasoning stays in what the model read (the template would drop it)
    assert first_reply.thinking and first_reply.thinking.strip()[:8] in text
    assert text.count("<|im_start|>user\n") == 2
    assert text.index("And what is two plus two?") > text.index("Hello, how are you?")
    assert [m.role for m in chat.conversation.messages] == ["user", "assistant"] * 2


def test_second_turn_answers_as_a_fresh_greedy_run_on_the_same_tokens_would(loaded):
    chat = session(loaded)
    answer(chat, "Hello")
    fed_before = len(chat.stream)
    steps = list(chat.ask(Message("user", "Tell me more")))
    generated = [s.token_id for s in steps if s.token_id is not None]
    prompt = chat.stream[:fed_before + steps[-1].stats["prompt_tokens"]]
    model, fresh = loaded.model, loaded.model.new_state()
    logits = model.prefill(prompt, fresh)
    greedy = []
    for _ in generated:
        greedy.append(int(np.argmax(logits)))
        logits = model.decode(greedy[-1], fresh)
    assert generated and greedy == generated


def test_an_answer_cut_by_the_token_limit_is_closed_before_the_next_turn(loaded):
    chat = session(loaded, max_tokens=5, thinking=False)
    last = answer(chat, "Hi")
    assert last.finish_reason == "length"
    # the generator does not feed the token that hit the limit; the session owes it
    assert len(chat.carry) == 1 + len(chat.closing_ids)
    answer(chat, "Go on")
    assert_state_matches_fresh_prefill(loaded, chat)


def test_interrupted_answer_is_kept_and_the_state_stays_consistent(loaded):
    chat = session(loaded, max_tokens=50)
    seen = []
    last = answer(chat, "Count to ten", should_stop=lambda: len(seen) >= 4 or seen.append(1) is not None and False)
    assert last.finish_reason == "interrupted"
    reply = chat.conversation.messages[-1]
    assert reply.finish_reason == "interrupted" and last.stats["generated_tokens"] >= 3
    assert_state_matches_fresh_prefill(loaded, chat)
    answer(chat, "Continue")
    assert_state_matches_fresh_prefill(loaded, chat)


def test_ctrl_c_while_the_prompt_is_read_drops_the_turn_and_rebuilds_from_history(loaded):
    chat = session(loaded)
    answer(chat, "Hello")
    kept = list(chat.conversation.messages)
    long_message = "word " * 400          # several prefill chunks
    with pytest.raises(PromptInterrupted):
        list(chat.ask(Message("user", long_message), should_stop=lambda: True))
    assert chat.conversation.messages == kept and chat.stale
    answer(chat, "Short one")
    assert_state_matches_fresh_prefill(loaded, chat)
    assert chat.conversation.turns == 2


def test_loaded_conversation_is_read_whole_through_the_template(loaded, tmp_path):
    chat = session(loaded)
    answer(chat, "First question")
    answer(chat, "Second question")
    saved = chat.conversation.save(tmp_path / "chat.json")

    other = session(loaded)
    other.replace_conversation(Conversation.load(saved))
    assert other.conversation.turns == 2
    answer(other, "Third question")
    history = Conversation.load(saved)
    history.messages.append(Message("user", "Third question"))
    rendered = render_chat(loaded.chat_template, history.template_messages(), add_generation_prompt=True,
                           enable_thinking=True)
    fed = loaded.tokenizer.decode(other.stream)
    assert fed.startswith(rendered)           # the canonical render, earlier reasoning dropped
    assert_state_matches_fresh_prefill(loaded, other)


def test_new_system_message_rebuilds_the_conversation_with_it(loaded):
    chat = session(loaded)
    answer(chat, "Hello")
    chat.set_system("You answer in French.")
    answer(chat, "Again")
    text = loaded.tokenizer.decode(chat.stream)
    assert text.startswith("<|im_start|>system\nYou answer in French.<|im_end|>\n<|im_start|>user\nHello")
    assert_state_matches_fresh_prefill(loaded, chat)


def test_full_context_is_refused_without_touching_the_state(loaded):
    chat = session(loaded, max_context=40)
    answer(chat, "Hi")
    before = chat.state.n_tokens
    with pytest.raises(ContextFull, match="/clear"):
        list(chat.ask(Message("user", "a longer message " * 10)))
    assert chat.state.n_tokens == before and not chat.stale
    chat.clear()
    answer(chat, "Hi")


def test_conversation_json_round_trip_keeps_everything(tmp_path):
    conv = Conversation(system="Be brief.", model="m.gguf", messages=[
        Message("user", "What is here?", images=[str(PICTURE)]),
        Message("assistant", "A square.", thinking="Looking.", finish_reason="stop",
                boxes=[{"label": "square", "box": [1, 2, 3, 4]}]),
    ])
    back = Conversation.load(conv.save(tmp_path / "c.json"))
    assert back.system == conv.system and back.messages == conv.messages
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(Exception, match="not JSON"):
        Conversation.load(bad)
    bad.write_text('{"messages": []}')
    with pytest.raises(Exception, match="not a rax conversation"):
        Conversation.load(bad)


@pytest.mark.skipif(not VISION_MMPROJ.exists(), reason="vision fixture absent")
def test_picture_in_a_later_turn_keeps_positions_consistent_with_a_fresh_prefill():
    from raxcli import multimodal
    loaded = load_model(VISION_MODEL)
    vision = multimodal.load_vision(VISION_MMPROJ, loaded.model.config)
    chat = ChatSession(loaded, ChatOptions(max_tokens=6, max_context=4096, greedy=True), vision=vision)
    answer(chat, "Hello")
    list(chat.ask(Message("user", "What is in the picture?", images=[str(PICTURE)])))
    answer(chat, "And now?")
    # the reference layout of the whole conversation at once (get_rope_index): text advances
    # all three position streams by one; the picture's merged grid sits at (p, p + row, p + col)
    # and the text after it resumes at p + max(rows, cols)
    visual = multimodal.load_image(PICTURE, vision)
    merge = visual.config.merge_size
    _, grid_h, grid_w = (n // m for n, m in zip(visual.grid_thw, (1, merge, merge)))
    pad = loaded.tokenizer.id_of("<|image_pad|>")
    first = chat.stream.index(pad)
    n_pads = grid_h * grid_w
    assert chat.stream[first:first + n_pads] == [pad] * n_pads and chat.stream.count(pad) == n_pads
    after = len(chat.stream) - first - n_pads
    rows, cols = np.divmod(np.arange(n_pads), grid_w)
    resume = first + max(grid_h, grid_w)
    positions = np.concatenate([
        np.broadcast_to(np.arange(first), (3, first)),
        np.stack([np.full(n_pads, first), first + rows, first + cols]),
        np.broadcast_to(np.arange(resume, resume + after), (3, after))], axis=1)
    embeddings = loaded.model.embed(chat.stream)
    embeddings[first:first + n_pads] = vision.encode(visual)
    fresh = loaded.model.new_state()
    loaded.model.forward(embeddings, fresh, positions)
    assert fresh.next_position == chat.state.next_position == resume + after
    probe = chat.carry[0]
    kept, anew = loaded.model.decode(probe, copy.deepcopy(chat.state)), loaded.model.decode(probe, fresh)
    assert float(np.abs(kept - anew).max()) <= 2e-4 * max(1.0, float(np.abs(anew).max()))
