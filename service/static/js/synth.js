// A small WebAudio synthesiser that plays a melody's notes (no samples, no soundfont):
// each note is a triangle oscillator plus a quieter sine an octave up, shaped by an
// attack-decay-release envelope, through one low-pass filter and a master gain.
// The player reports its state on the element it is given (data-state="playing|stopped")
// and calls onNote(index) for the note sounding now (-1 when none), for highlighting.
// A melody's accompaniment (its bass and chords) is a second voice with a gain of its own, so it
// can be muted and unmuted while it plays (setAccompanimentMuted); only the melody is highlighted.

const midiToHz = (p) => 440 * 2 ** ((p - 69) / 12);
const ACCOMPANIMENT_LEVEL = 0.45;   // its chords are three or four notes at once: kept under the melody

export class Player {
  constructor({ onNote = () => {}, onStateChange = () => {} } = {}) {
    this.onNote = onNote;
    this.onStateChange = onStateChange;
    this.context = null;
    this.voices = [];
    this.state = "stopped";
    this.current = -1;
    this.accompanimentMuted = false;
    this.accompaniment = [];
  }

  // The AudioContext is made on the first play (browsers only allow sound after a gesture).
  ensureContext() {
    if (!this.context) {
      const Context = window.AudioContext || window.webkitAudioContext;
      this.context = new Context();
    }
    return this.context;
  }

  // notes: the melody; accompaniment: the notes under it (played quieter, mutable), or none.
  async play(notes, accompaniment = []) {
    this.stop();
    if (!notes.length) return;
    const ctx = this.ensureContext();
    if (ctx.state !== "running") await ctx.resume();

    const master = ctx.createGain();
    master.gain.value = 0.25;
    const filter = ctx.createBiquadFilter();
    filter.type = "lowpass";
    filter.frequency.value = 3500;
    filter.connect(master).connect(ctx.destination);
    this.master = master;

    this.filter = filter;
    // The accompaniment's own gain: under the melody, and 0 while it is muted.
    this.accompanimentGain = ctx.createGain();
    this.accompanimentGain.gain.value = this.accompanimentMuted ? 0 : ACCOMPANIMENT_LEVEL;
    this.accompanimentGain.connect(filter);
    this.notes = [];
    this.accompaniment = [];
    this.t0 = ctx.currentTime + 0.08; // a little headroom so the first note is not clipped
    this.duration = 0;
    this.extend(notes);
    this.schedule(accompaniment, this.accompanimentGain);
    this.accompaniment = accompaniment;
    this.setState("playing");
    this.tick();
  }

  // Mutes (or brings back) the accompaniment, at once if it is playing and for later playbacks.
  setAccompanimentMuted(muted) {
    this.accompanimentMuted = muted;
    if (this.accompanimentGain) this.accompanimentGain.gain.value = muted ? 0 : ACCOMPANIMENT_LEVEL;
  }

  // Adds notes (in time order, after those already playing) to the playback under way: a melody
  // that is still being composed plays on as its bars arrive.
  extend(notes) {
    if (!this.context || !this.filter) return;
    this.schedule(notes, this.filter);
    this.notes.push(...notes);
  }

  // Schedules notes on the audio clock into `destination` (the melody's filter, or the
  // accompaniment's gain before it).
  schedule(notes, destination) {
    const ctx = this.context;
    for (const n of notes) {
      const start = this.t0 + n.start;
      const length = Math.max(0.05, n.end - n.start);
      const peak = 0.3 + 0.7 * ((n.velocity ?? 90) / 127);
      const env = ctx.createGain();
      // Envelope: 10 ms attack, decay to 60% over 150 ms, hold, 80 ms release after the note.
      env.gain.setValueAtTime(0, start);
      env.gain.linearRampToValueAtTime(peak, start + 0.01);
      env.gain.setTargetAtTime(peak * 0.6, start + 0.01, 0.05);
      env.gain.setValueAtTime(peak * 0.6, start + length);
      env.gain.linearRampToValueAtTime(0, start + length + 0.08);
      env.connect(destination);
      for (const [type, ratio, level] of [["triangle", 1, 1], ["sine", 2, 0.2]]) {
        const osc = ctx.createOscillator();
        osc.type = type;
        osc.frequency.value = midiToHz(n.pitch) * ratio;
        const g = ctx.createGain();
        g.gain.value = level;
        osc.connect(g).connect(env);
        osc.start(start);
        osc.stop(start + length + 0.1);
        this.voices.push(osc);
      }
      this.duration = Math.max(this.duration, n.end + 0.1);
    }
  }

  // Follows the audio clock to report which note sounds now; ends the playback at the end.
  tick() {
    if (this.state !== "playing") return;
    const t = this.context.currentTime - this.t0;
    if (t >= this.duration) {
      this.stop();
      return;
    }
    let index = -1;
    for (let i = 0; i < this.notes.length; i++) {
      const n = this.notes[i];
      if (n.start <= t && t < n.end) index = i;
      if (n.start > t) break;
    }
    if (index !== this.current) {
      this.current = index;
      this.onNote(index);
    }
    this.frame = requestAnimationFrame(() => this.tick());
  }

  stop() {
    cancelAnimationFrame(this.frame);
    for (const osc of this.voices) {
      try { osc.stop(); } catch (_) { /* never started or already stopped */ }
    }
    this.voices = [];
    if (this.master) {
      this.master.disconnect();
      this.master = null;
      this.filter = null;
      this.accompanimentGain = null;
    }
    if (this.current !== -1) {
      this.current = -1;
      this.onNote(-1);
    }
    this.setState("stopped");
  }

  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.onStateChange(state);
  }
}
