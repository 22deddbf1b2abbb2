"""The network's form, chord and style inputs: the labels read from a tune, how they are packed,
learnt (dropped, transposed, grown from a checkpoint without them) and told during generation."""
import numpy as np
import pytest
import torch

from model.generation.params import GenerationParams, ParameterError
from model.generation.sampling import Generator
from model.network.checkpoint import load_checkpoint, save_checkpoint
from model.network.conditions import condition_ids, transpose_chords, tune_positions
from model.network.melody import (CHORDS, POINTERS, RELATIONS, UNKNOWN_CHORD, UNKNOWN_POINTER, UNKNOWN_RELATION,
                                  MelodyNetwork, NetworkConfig)
from model.representation.chords import parse_chord
from model.representation.corpora import Corpus, Tune, spec_parts
from model.representation.form import NO_POINTER, RELATION_IDS
from model.representation.harmony import HarmonyModel
from model.representation.styles import STYLES, style_id, style_of
from model.representation.tokens import MelodyTokenizer, Note, TokenizerConfig
from model.representation.tune_labels import chord_labels, form_labels, next_step_places
from model.training.config import TrainConfig
from model.training.trainer import Trainer, train

TOK = MelodyTokenizer()
ALL = dict(position_dim=4, max_positions=TOK.max_bar_steps, remaining_dim=3, key_dim=3, form_dim=3, chord_dim=3,
           style_dim=2, styles=STYLES)


def bars_tune(bars: list[list[int]], meter="4/4", quarter=4) -> list[int]:
    """A tune of quarter notes, one list of pitches a bar."""
    notes, t = [], 0
    for bar in bars:
        for p in bar:
            notes.append(Note(p, t, t + quarter))
            t += quarter
    return TOK.encode_notes(notes, meter)


def test_styles_are_the_collections_tunes_come_from():
    assert style_of("essenFolksong/han1.abc#3") == "chinese" and style_of("essenFolksong/han2.abc#0") == "chinese"
    assert style_of("essenFolksong/erk10.abc#5") == "german" and style_of("essenFolksong/irl.abc#1") == "irish"
    assert style_of("oneills1850/0001-0050.abc#2") == "irish" and style_of("airdsAirs/book1.abc#0") == "irish"
    assert style_of("my_tunes/reel.mid#0") is None
    assert style_id("irish") == 2 and style_id(None) == style_id("any") == len(STYLES)
    with pytest.raises(ValueError, match="style must be one of german, chinese, irish, any"):
        style_id("klezmer")
    assert spec_parts("music21:styles")[0] == "music21:essenFolksong" and len(spec_parts("music21:styles")) == 4
    assert spec_parts("music21:bach+music21:oneills1850") == ["music21:bach", "music21:oneills1850"]


def test_each_token_is_labelled_with_the_form_of_the_bar_its_next_step_lies_in():
    a, b = [60, 62, 64, 65], [67, 65, 64, 62]
    ids = bars_tune([a, b, a, [67, 65, 64, 60]])  # A B A B' (the last bar a variant of bar 1: 3 of 4 pitches)
    # (B shares A's rhythm, with fewer than half its pitches: a rhythm repeat of the bar before)
    places = next_step_places(ids, TOK)
    labels = form_labels(ids, TOK, places)
    per_bar = {}
    for (bar, _), label in zip(places, labels):
        per_bar.setdefault(bar, set()).add(label)
    assert per_bar[0] == {(RELATION_IDS["new"], NO_POINTER)} and per_bar[1] == {(RELATION_IDS["rhythm"], 0)}
    assert per_bar[2] == {(RELATION_IDS["exact"], 1)}        # bar 0, two bars back
    assert per_bar[3] == {(RELATION_IDS["variant"], 1)}      # bar 1, two bars back
    first_step = next(i for i, t in enumerate(ids) if TOK.is_step(t))
    assert places[first_step - 1] == (0, 0)  # the barline before bar 0's first step reads bar 0's step 0


def test_each_token_is_labelled_with_the_chord_under_its_next_step():
    # an arpeggiated I IV V I in G: the estimator's chords, laid on the steps they sound under
    ids = bars_tune([[67, 71, 74, 71], [72, 76, 79, 76], [74, 78, 81, 78], [67, 71, 74, 79]])
    chords = chord_labels(ids, TOK, HarmonyModel.load())
    places = next_step_places(ids, TOK)
    by_bar = {}
    for (bar, _), c in zip(places, chords):
        by_bar.setdefault(bar, set()).add(c)
    g, c, d = (parse_chord(s).id for s in ("G", "C", "D"))
    assert g in by_bar[0] and c in by_bar[1] and (d in by_bar[2] or parse_chord("D7").id in by_bar[2]) and g in by_bar[3]
    up = transpose_chords(np.array([g, UNKNOWN_CHORD]), 2, UNKNOWN_CHORD)
    assert up.tolist() == [parse_chord("A").id, UNKNOWN_CHORD]


def test_condition_ids_pack_every_input_and_unpack_it():
    cfg = NetworkConfig(vocab_size=TOK.vocab_size, **ALL)
    cid = cfg.condition_id(5, 2, 13, 3, 7, chord=40, style=1)
    assert {k: int(v) for k, v in cfg.fields(cid).items()} == dict(position=5, remaining=2, key=13, relation=3,
                                                                  pointer=7, chord=40, style=1)
    unknown = cfg.fields(cfg.condition_id(5, None))
    assert (int(unknown["relation"]), int(unknown["pointer"]), int(unknown["chord"]), int(unknown["style"])) == \
        (UNKNOWN_RELATION, UNKNOWN_POINTER, UNKNOWN_CHORD, len(STYLES))
    assert int(cfg.with_fields(np.int64(cid), chord=2)) == cfg.condition_id(5, 2, 13, 3, 7, chord=2, style=1)
    # a network with the key alone keeps the ids it always had
    old = NetworkConfig(vocab_size=TOK.vocab_size, position_dim=4, max_positions=16, remaining_dim=3, key_dim=3)
    assert old.condition_id(7, 2, 13) == 7 + 16 * 2 + old.key_stride * 13
    assert RELATIONS * POINTERS * CHORDS < 2 ** 20


def test_the_step_path_reads_every_input_as_the_forward_pass_does():
    torch.manual_seed(0)
    net = MelodyNetwork(NetworkConfig(vocab_size=TOK.vocab_size, embedding_dim=8, hidden_size=12, **ALL)).eval()
    cfg, g = net.config, torch.Generator().manual_seed(1)
    shape = (3, 7)
    f = {"position": torch.randint(0, cfg.max_positions, shape, generator=g),
         "remaining": torch.randint(0, cfg.max_remaining + 2, shape, generator=g),
         "key": torch.randint(0, 25, shape, generator=g), "relation": torch.randint(0, RELATIONS, shape, generator=g),
         "pointer": torch.randint(0, POINTERS, shape, generator=g), "chord": torch.randint(0, CHORDS, shape, generator=g),
         "style": torch.randint(0, len(STYLES) + 1, shape, generator=g)}
    cond = cfg.pack(f)
    tokens = torch.randint(0, TOK.vocab_size, shape, generator=g)
    logits, _ = net(tokens, cond)
    state, steps = net.init_state(3), []
    for t in range(shape[1]):
        out, state = net.step(tokens[:, t], cond[:, t], state)
        steps.append(out)
    torch.testing.assert_close(torch.stack(steps, 1), logits, atol=1e-4, rtol=1e-4)
    for name in ("relation", "pointer", "chord", "style"):  # each input changes what the network predicts
        other = dict(f, **{name: (f[name] + 1) % {"relation": RELATIONS, "pointer": POINTERS, "chord": CHORDS,
                                                   "style": len(STYLES) + 1}[name]})
        assert not torch.allclose(net(tokens, cfg.pack(other))[0], logits), name


def synthetic_corpus(n=12) -> Corpus:
    a, b = [60, 62, 64, 65], [67, 65, 64, 62]
    names = ("essenFolksong/erk10.abc", "essenFolksong/han1.abc", "oneills1850/0001-0050.abc")
    tunes = [Tune(f"{names[i % 3]}#{i}", np.asarray(bars_tune([[p + i % 4 for p in a], b, a, b]), dtype=np.int32), "4/4")
             for i in range(n)]
    return Corpus(tunes, [], {"spec": "synthetic"}, TokenizerConfig())


def small(tmp_path, **kw) -> TrainConfig:
    settings = dict(data="synthetic", out=str(tmp_path / "m.pt"), hidden_size=16, layers=1, embedding_dim=8,
                    dropout=0.0, bptt="full", batch_size=3, lr=5e-3, lr_patience=1, epochs=1, patience=5, threads=1,
                    transpose=(0, 0), valid=0.3, test=0.0, short_term=False)
    settings.update(kw)
    return TrainConfig(**settings)


def test_training_reads_each_tunes_labels_and_drops_them_to_unknown(tmp_path):
    corpus = synthetic_corpus()
    trainer = Trainer(small(tmp_path, form_inputs=True, chord_inputs=True, style_inputs=True, form_dropout=0.0,
                            form_bar_dropout=0.0, chord_dropout=0.0, style_dropout=0.0, transpose=(3, 3)),
                      corpus, show_progress=False)
    cfg = trainer.model.config
    first = cfg.fields(trainer.train_positions[0])
    assert set(first["style"].tolist()) == {STYLES.index("german")}  # essenFolksong/erk10 is German
    assert (first["relation"] == RELATION_IDS["exact"]).any() and not (first["chord"] == UNKNOWN_CHORD).all()
    moved = [cfg.fields(b[1]) for b in trainer.epoch_batches(0)]
    assert not any((m["relation"] == UNKNOWN_RELATION).any() or (m["style"] == len(STYLES)).all() for m in moved)
    # dropout: with every share at 0.9, most tunes read each input as unknown
    hidden = Trainer(small(tmp_path, form_inputs=True, chord_inputs=True, style_inputs=True, form_dropout=0.9,
                           chord_dropout=0.9, style_dropout=0.9), corpus, show_progress=False)
    rows = [hidden.model.config.fields(b[1][r]) for b in hidden.epoch_batches(0) for r in range(len(b[1]))]
    for name, unknown in (("relation", UNKNOWN_RELATION), ("chord", UNKNOWN_CHORD), ("style", len(STYLES))):
        assert sum(bool((row[name] == unknown).all()) for row in rows) > len(rows) // 2, name


def test_a_run_grows_the_new_inputs_from_a_checkpoint_without_them_unchanged(tmp_path):
    corpus = synthetic_corpus()
    plain = small(tmp_path, out=str(tmp_path / "plain.pt"))
    train(plain, corpus=corpus, show_progress=False)
    before, _, _ = load_checkpoint(plain.out)
    grown = Trainer(small(tmp_path, out=str(tmp_path / "grown.pt"), init=plain.out, key_inputs=True, form_inputs=True,
                          chord_inputs=True, style_inputs=True), corpus, show_progress=False).model.eval()
    tokens = [np.asarray(t.tokens, dtype=np.int64) for t in corpus.tunes[:2]]  # (one length: one structure)
    ids = [t.id for t in corpus.tunes[:2]]
    a, _ = before.eval()(torch.tensor(np.stack(tokens)), torch.tensor(np.stack(tune_positions(TOK, tokens, before.config))))
    b, _ = grown(torch.tensor(np.stack(tokens)),
                 torch.tensor(np.stack(tune_positions(TOK, tokens, grown.config, tune_ids=ids))))
    torch.testing.assert_close(a, b)


@pytest.fixture(scope="module")
def styled(tmp_path_factory):
    """A tiny untrained network with every input, its style weights large enough to matter."""
    torch.manual_seed(0)
    net = MelodyNetwork(NetworkConfig(vocab_size=TOK.vocab_size, embedding_dim=8, hidden_size=16, num_layers=1, **ALL))
    with torch.no_grad():
        net.style_embedding.weight.mul_(20)
    return Generator(save_checkpoint(tmp_path_factory.mktemp("styled") / "styled.pt", net, TOK))


def test_a_requested_style_is_what_the_network_reads_and_changes_the_melody(styled):
    def notes(style):
        return [m.tokens for m in styled.generate(GenerationParams(bars=4, seed=5, count=2, style=style)).melodies]
    assert notes("irish") == notes("irish")
    assert notes("irish") != notes("german") and notes(None) == notes("any")
    with pytest.raises(ParameterError, match="style must be"):
        GenerationParams(style="klezmer").validate()


def test_a_model_without_a_style_input_refuses_a_style(tmp_path):
    net = MelodyNetwork(NetworkConfig(vocab_size=TOK.vocab_size, embedding_dim=8, hidden_size=8, num_layers=1,
                                      position_dim=4, max_positions=TOK.max_bar_steps))
    gen = Generator(save_checkpoint(tmp_path / "plain.pt", net, TOK))
    with pytest.raises(ParameterError, match="style must be null or 'any': this model has no style input"):
        gen.generate(GenerationParams(bars=2, seed=1, style="irish"))
    assert gen.generate(GenerationParams(bars=2, seed=1, style="any")).melodies


def test_generation_tells_the_network_the_form_plan_and_the_chords(styled):
    from model.generation.rows import MelodyRows
    params = GenerationParams(bars=8, seed=2, count=2, form="AABB", form_strict=True, chords="G C | D7 G", key="G")
    rows = MelodyRows(styled, params, styled.prefix(params), None, 2, 2)
    cfg = styled.model.config
    f = cfg.fields(np.asarray(rows.positions))
    told = {(int(rows.where[i + 1][0]), int(r), int(p)) for i, (r, p) in enumerate(zip(f["relation"], f["pointer"]))
            if i + 1 < len(rows.where) and rows.where[i + 1] is not None}
    assert (2, RELATION_IDS["exact"], 1) in told and (0, UNKNOWN_RELATION, UNKNOWN_POINTER) in told
    chords = {int(c) for c in f["chord"]} - {UNKNOWN_CHORD}
    assert chords == {parse_chord(s).id for s in ("G", "C", "D7")}
    assert set(int(s) for s in f["style"]) == {len(STYLES)}  # no style asked for: unknown
    # BOS TS is read with the request's conditions: the style's start state is its own
    ids = condition_ids(TOK, TOK.start_ids("4/4"), cfg, style=1)
    assert int(cfg.fields(np.asarray(ids))["style"][0]) == 1


def test_a_style_draws_its_default_form_from_its_own_tunes(tmp_path):
    from model.generation.form_plan import load_form_table, request_plans
    path = tmp_path / "forms.json"
    path.write_text('{"format": 2, "plans": {"4/4": {"4": [[0, 16, "n n n n"]]}},'
                    ' "styles": {"irish": {"4/4": {"4": [[0, 16, "n e1 n e2"]]}}}}')
    table = load_form_table(path)
    plans = lambda style: request_plans(GenerationParams(bars=4, style=style), table, "4/4", 16, 0, 1, False)  # noqa: E731
    # (the last bar is the ending's, free of masks, but the network is still told it repeats bar 1)
    assert plans("irish")[0].refs == (0, 0, 2, 3) and plans("irish")[0].labels[3] == (RELATION_IDS["exact"], 1)
    assert plans(None)[0].refs == (0, 1, 2, 3)
    assert plans("german")[0].refs == (0, 1, 2, 3)  # a style without a table of its own: every tune's


def test_over_given_chords_a_sampled_plan_copies_only_bars_under_the_same_chords():
    from model.generation.form_plan import COPY, FREE, RHYTHM, FormPlan, under_chords
    from model.representation.chords import parse_progression
    plan = FormPlan((FREE, FREE, COPY, COPY), (0, 1, 0, 1), 0, (True, True, False, False),
                    ((0, 16), (0, 16), (1, 1), (1, 1)))
    over = under_chords(plan, parse_progression("G | C | G | D7"))
    assert over.kinds == (FREE, FREE, COPY, RHYTHM) and over.refs == plan.refs   # bar 3 (D7) is not bar 1 (C)
    assert over.labels[2] == (RELATION_IDS["exact"], 1) and over.labels[3] == (RELATION_IDS["variant"], 1)


def test_a_style_without_a_temperature_samples_at_the_styles_own(tiny_style_checkpoint):
    """A request naming Chinese and no temperature draws at STYLE_TEMPERATURES' 0.9, token for token as
    if it had asked for 0.9; an explicit temperature wins, and other styles sample at 1."""
    from model.generation.params import STYLE_TEMPERATURES
    assert STYLE_TEMPERATURES == {"chinese": 0.9}
    assert GenerationParams(style="chinese").sampling_temperature == 0.9
    assert GenerationParams(style="chinese", temperature=1.0).sampling_temperature == 1.0
    assert GenerationParams(style="german").sampling_temperature == GenerationParams().sampling_temperature == 1.0
    gen = Generator(tiny_style_checkpoint)
    differ = 0
    for seed in range(3):
        tokens = {t: gen.generate(GenerationParams(bars=4, seed=seed, style="chinese", temperature=t)).melodies[0].tokens
                  for t in (None, 0.9, 1.0)}
        assert tokens[None] == tokens[0.9]
        differ += tokens[None] != tokens[1.0]
        german = [gen.generate(GenerationParams(bars=4, seed=seed, style="german", temperature=t)).melodies[0].tokens
                  for t in (None, 1.0)]
        assert german[0] == german[1]
    assert differ >= 2
    with pytest.raises(ParameterError, match="temperature"):
        GenerationParams(temperature=0).validate()
