// Oyez playground: a page that uses the public API like any client (no framework, no network beyond this server).
'use strict';

const KEY_STORE = 'oyez.apiKey';
const DIARIZE = /diarize/;
const LANGUAGES = [
  ['en', 'English'], ['es', 'Spanish'], ['fr', 'French'], ['de', 'German'], ['it', 'Italian'],
  ['pt', 'Portuguese'], ['nl', 'Dutch'], ['sv', 'Swedish'], ['pl', 'Polish'], ['ru', 'Russian'],
  ['uk', 'Ukrainian'], ['tr', 'Turkish'], ['ar', 'Arabic'], ['hi', 'Hindi'], ['ja', 'Japanese'],
  ['zh', 'Chinese'], ['ko', 'Korean'],
];
const FORMATS = {
  speech: ['verbose_json', 'json', 'text', 'srt', 'vtt'],
  diarize: ['diarized_json', 'json', 'text', 'srt', 'vtt'],
};
const MEDIA_TYPES = {
  json: 'application/json', verbose_json: 'application/json', diarized_json: 'application/json',
  text: 'text/plain', srt: 'application/x-subrip', vtt: 'text/vtt',
};
const EXTENSIONS = { json: 'json', verbose_json: 'json', diarized_json: 'json', text: 'txt', srt: 'srt', vtt: 'vtt' };
const REALTIME_OPEN_TIMEOUT_MS = 5000;
// After Stop, wait for the last captions while the server keeps talking: at most this long with no event,
// and this long in all.
const REALTIME_IDLE_MS = 90000;
const REALTIME_FINISH_MS = 180000;
const SPEAKER_CLIP_SECONDS = 6;

const $ = (id) => document.getElementById(id);
const ui = {};
let apiKey = '';
let result = null;          // the last file transcription: {model, diarized, text, segments, duration, verbose}
let knownSpeakers = [];     // [{name, dataUrl, seconds}]
let recordedClip = null;    // a recorded known-speaker clip waiting for "Add speaker"
let playerUrl = null;
let live = null;            // the running live-captions session

// ---------- API ----------

class ShownError extends Error {}

function apiUrl(path) {
  return new URL(path, document.baseURI).toString();
}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (apiKey) headers.set('Authorization', `Bearer ${apiKey}`);
  let response;
  try {
    response = await fetch(apiUrl(path), { ...options, headers });
  } catch (err) {
    throw new ShownError(
      'The server closed the connection before answering. If you were uploading, the file may be larger than ' +
      'the server accepts; otherwise check that Oyez is still running.');
  }
  if (!response.ok) throw new ShownError(await errorMessage(response));
  return response;
}

async function errorMessage(response) {
  let message = '';
  try {
    const body = await response.json();
    message = (body && body.error && body.error.message) || (body && body.detail) || '';
  } catch (_) { /* not JSON */ }
  message = message || response.statusText || 'The request failed.';
  switch (response.status) {
    case 401:
      return `This server needs an API key: enter it in the API key field at the top and choose “Use key”. ` +
        `The server said: ${message}`;
    case 413:
      return /too large/i.test(message) ? message : `The file is too large for this server: ${message}`;
    case 429: {
      const wait = response.headers.get('Retry-After');
      const when = wait ? ` Try again in ${wait} second${wait === '1' ? '' : 's'}.` : ' Try again shortly.';
      return `The server is busy. ${message}${when}`;
    }
    default:
      return `${message} (HTTP ${response.status})`;
  }
}

// Server-sent events from a fetch response: yields each `data:` payload, parsed.
async function* sse(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
    let cut;
    while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, '');
      const data = block.split(/\r?\n/).filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n');
      if (data) yield JSON.parse(data);
    }
    if (done) return;
  }
}

// ---------- errors and status ----------

function showError(message) {
  ui.error.textContent = message;
  ui.error.hidden = false;
  ui.error.scrollIntoView({ block: 'nearest' });  // never out of sight, wherever the page was scrolled
}

function clearError() {
  ui.error.textContent = '';
  ui.error.hidden = true;
}

function report(err) {
  if (!(err instanceof ShownError)) console.warn(err);  // the page shows it; the console keeps the detail
  showError(err instanceof ShownError ? err.message : `Something went wrong: ${err && err.message ? err.message : err}`);
}

// ---------- models ----------

async function loadModels() {
  clearError();
  let models;
  try {
    const response = await api('v1/models');
    models = (await response.json()).data.map((m) => m.id);
  } catch (err) {
    report(err);
    return;
  }
  fillSelect(ui.model, models, ui.model.value || preferred(models, 'whisper-1'));
  const speech = models.filter((m) => !DIARIZE.test(m));
  fillSelect(ui.liveModel, speech, ui.liveModel.value || preferred(speech, 'whisper-1'));
  modelChanged();
}

function preferred(list, id) {
  return list.includes(id) ? id : list[0];
}

function fillSelect(select, values, chosen) {
  select.replaceChildren(...values.map((v) => new Option(v, v, false, v === chosen)));
}

function isDiarize(model) {
  return DIARIZE.test(model || '');
}

function modelChanged() {
  const diarize = isDiarize(ui.model.value);
  const previous = ui.format.value;
  const formats = FORMATS[diarize ? 'diarize' : 'speech'];
  fillSelect(ui.format, formats, formats.includes(previous) ? previous : formats[0]);
  ui.known.hidden = !diarize;
  showResponse();
}

// ---------- transcribe a file ----------

function setFile(file) {
  if (playerUrl) URL.revokeObjectURL(playerUrl);
  playerUrl = file ? URL.createObjectURL(file) : null;
  ui.player.hidden = !file;
  if (file) ui.player.src = playerUrl; else ui.player.removeAttribute('src');
}

function transcriptionForm(file, model) {
  const form = new FormData();
  form.append('file', file, file.name || 'audio');
  form.append('model', model);
  if (ui.language.value) form.append('language', ui.language.value);
  return form;
}

async function transcribe() {
  clearError();
  const file = ui.fileInput.files[0];
  if (!file) {
    showError('Choose an audio file first (or drop one on the page).');
    ui.fileInput.focus();
    return;
  }
  const model = ui.model.value;
  if (!model) {
    showError('No model to use yet: the model list has not loaded.');
    return;
  }
  const diarized = isDiarize(model);
  result = null;
  ui.transcript.textContent = '';
  ui.segments.replaceChildren();
  showResponse();
  setBusy(true);
  ui.status.textContent = 'Uploading…';
  try {
    const form = transcriptionForm(file, model);
    form.append('stream', 'true');
    form.append('response_format', diarized ? 'diarized_json' : 'json');
    if (diarized) {
      for (const s of knownSpeakers) {
        form.append('known_speaker_names[]', s.name);
        form.append('known_speaker_references[]', s.dataUrl);
      }
    }
    const response = await api('v1/audio/transcriptions', { method: 'POST', body: form });
    ui.status.textContent = diarized ? 'Transcribing and finding who spoke when…' : 'Transcribing…';
    let text = '';
    const segments = [];
    let finished = false;
    for await (const event of sse(response)) {
      if (event.type === 'transcript.text.delta') {
        text += event.delta;
        ui.transcript.textContent = text;
      } else if (event.type === 'transcript.text.segment') {
        const segment = { id: event.id, start: event.start, end: event.end, text: event.text, speaker: event.speaker };
        segments.push(segment);
        renderSegments(segments);
      } else if (event.type === 'transcript.text.done') {
        text = event.text;
        ui.transcript.textContent = text;
        finished = true;
      } else if (event.type === 'error') {
        throw new ShownError(`The transcription failed: ${(event.error && event.error.message) || 'unknown error'}`);
      }
    }
    if (!finished) throw new ShownError('The stream ended before the transcription was done.');
    if (diarized) {
      renderSpeakerText(segments);
      const duration = (await fileDuration(file)) || Math.max(0, ...segments.map((s) => s.end));
      result = { model, diarized, text, segments, duration, verbose: null };
    } else {
      // The stream carries no timestamps for speech models: one non-streamed verbose_json request gets them.
      ui.status.textContent = 'Getting the segments with their timestamps…';
      const form2 = transcriptionForm(file, model);
      form2.append('response_format', 'verbose_json');
      form2.append('timestamp_granularities[]', 'segment');
      const verbose = await (await api('v1/audio/transcriptions', { method: 'POST', body: form2 })).json();
      const segs = (verbose.segments || []).map((s) => ({ id: s.id, start: s.start, end: s.end, text: s.text.trim() }));
      result = { model, diarized, text, segments: segs, duration: verbose.duration, verbose };
      renderSegments(segs);
    }
    const speakers = new Set(result.segments.map((s) => s.speaker).filter(Boolean));
    ui.status.textContent = `Done: ${result.segments.length} segment${result.segments.length === 1 ? '' : 's'}` +
      (diarized ? `, ${speakers.size} speaker${speakers.size === 1 ? '' : 's'}.` : '.');
    showResponse();
  } catch (err) {
    ui.status.textContent = '';
    report(err);
  } finally {
    setBusy(false);
  }
}

function setBusy(busy) {
  ui.transcribe.disabled = busy;
  ui.transcribe.setAttribute('aria-busy', String(busy));
}

// A file's duration from its metadata (the browser does not decode the whole file); 0 when unknown.
function fileDuration(file) {
  return new Promise((resolve) => {
    const media = document.createElement('audio');
    const url = URL.createObjectURL(file);
    const done = (value) => { clearTimeout(timer); URL.revokeObjectURL(url); media.removeAttribute('src'); resolve(value); };
    const timer = setTimeout(() => done(0), 5000);
    media.preload = 'metadata';
    media.onloadedmetadata = () => done(Number.isFinite(media.duration) ? media.duration : 0);
    media.onerror = () => done(0);
    media.src = url;
  });
}

// ---------- segments, speakers, playback ----------

const speakerOrder = new Map();

function speakerClass(label) {
  if (!speakerOrder.has(label)) speakerOrder.set(label, speakerOrder.size);
  return `spk-${speakerOrder.get(label) % 8}`;
}

function renderSegments(segments) {
  speakerOrder.clear();
  const items = segments.map((s) => {
    const li = document.createElement('li');
    li.className = 'segment';
    li.setAttribute('data-testid', 'segment');
    li.dataset.start = String(s.start);
    li.dataset.end = String(s.end);
    const seek = document.createElement('button');
    seek.type = 'button';
    seek.className = 'seek';
    seek.textContent = `${clock(s.start)} – ${clock(s.end)}`;
    seek.setAttribute('aria-label', `Play from ${clock(s.start)}`);
    li.append(seek);
    if (s.speaker) {
      li.dataset.speaker = s.speaker;
      li.classList.add(speakerClass(s.speaker));
      const who = document.createElement('span');
      who.className = 'speaker';
      who.textContent = s.speaker;
      li.append(who);
    }
    const text = document.createElement('span');
    text.className = 'text';
    text.textContent = s.text;
    li.append(text);
    return li;
  });
  ui.segments.replaceChildren(...items);
}

// The diarized text, one `Speaker: text` line per segment, each speaker in its colour.
function renderSpeakerText(segments) {
  ui.transcript.replaceChildren(...segments.filter((s) => s.text).map((s) => {
    const line = document.createElement('div');
    const who = document.createElement('span');
    who.className = `speaker ${speakerClass(s.speaker)}`;
    who.textContent = s.speaker;
    line.append(who, `: ${s.text}`);
    return line;
  }));
}

function clock(seconds) {
  const total = Math.max(0, seconds);
  const m = Math.floor(total / 60);
  const s = (total - m * 60).toFixed(1).padStart(4, '0');
  return `${m}:${s}`;
}

function seekTo(event) {
  const li = event.target.closest('.segment');
  if (!li || ui.player.hidden) return;
  ui.player.currentTime = Number(li.dataset.start);
  ui.player.play().catch(() => { /* playback may need another gesture; the position is set */ });
}

function highlight() {
  const t = ui.player.currentTime;
  for (const li of ui.segments.children) {
    const on = t >= Number(li.dataset.start) && t < Number(li.dataset.end);
    if (on !== li.classList.contains('playing')) {
      li.classList.toggle('playing', on);
      if (on) {
        li.setAttribute('aria-current', 'true');
        li.scrollIntoView({ block: 'nearest' });
      } else {
        li.removeAttribute('aria-current');
      }
    }
  }
}

// ---------- responses, built in the browser from the result (same layouts as the server's) ----------

function rendered(format) {
  if (!result) return '';
  const segs = result.segments;
  const speakerText = () => segs.filter((s) => s.text).map((s) => `${s.speaker}: ${s.text}`).join('\n');
  const usage = { type: 'duration', seconds: Math.ceil(Number(result.duration.toFixed(3))) };
  switch (format) {
    case 'text':
      return `${result.text}\n`;
    case 'json':
      return JSON.stringify({ text: result.text, usage: result.verbose ? result.verbose.usage : usage }, null, 2);
    case 'verbose_json':
      return JSON.stringify(result.verbose, null, 2);
    case 'diarized_json':
      return JSON.stringify({
        task: 'transcribe', duration: Number(result.duration.toFixed(3)), text: speakerText(),
        segments: segs.map((s) => ({ type: 'transcript.text.segment', ...s })), usage,
      }, null, 2);
    case 'srt':
      return segs.map((s, i) => `${i + 1}\n${stamp(s.start, ',')} --> ${stamp(s.end, ',')}\n${label(s)}\n`).join('\n') + (segs.length ? '\n' : '');
    case 'vtt':
      return ['WEBVTT\n', ...segs.map((s) => `${stamp(s.start, '.')} --> ${stamp(s.end, '.')}\n${
        s.speaker ? `<v ${vttEscape(s.speaker)}>${vttEscape(s.text)}` : s.text}\n`)].join('\n') + '\n';
    default:
      return '';
  }
}

function label(s) {
  return s.speaker ? `${s.speaker}: ${s.text}` : s.text;
}

function vttEscape(text) {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function stamp(seconds, sep) {
  let ms = Math.max(0, Math.round(seconds * 1000));
  const h = Math.floor(ms / 3600000); ms -= h * 3600000;
  const m = Math.floor(ms / 60000); ms -= m * 60000;
  const s = Math.floor(ms / 1000); ms -= s * 1000;
  const two = (n) => String(n).padStart(2, '0');
  return `${two(h)}:${two(m)}:${two(s)}${sep}${String(ms).padStart(3, '0')}`;
}

function showResponse() {
  const format = ui.format.value || 'json';
  ui.responseFormat.textContent = format;
  ui.response.textContent = rendered(format);
  ui.download.disabled = !result;
  ui.download.textContent = `Download ${format}`;
}

function download() {
  if (!result) return;
  const format = ui.format.value;
  const blob = new Blob([rendered(format)], { type: MEDIA_TYPES[format] });
  const a = document.createElement('a');
  const base = (ui.fileInput.files[0] && ui.fileInput.files[0].name.replace(/\.[^.]+$/, '')) || 'transcript';
  a.href = URL.createObjectURL(blob);
  a.download = `${base}.${format === 'verbose_json' || format === 'diarized_json' ? format + '.' : ''}${EXTENSIONS[format]}`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

// ---------- known speakers ----------

function readDataUrl(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

async function addSpeaker() {
  clearError();
  const name = ui.speakerName.value.trim();
  const file = ui.speakerFile.files[0];
  if (!name) {
    showError('Give the known speaker a name.');
    ui.speakerName.focus();
    return;
  }
  if (knownSpeakers.some((s) => s.name === name)) {
    showError(`There is already a known speaker called “${name}”.`);
    return;
  }
  let clip = recordedClip;
  if (file) clip = { blob: file, seconds: await fileDuration(file) };
  if (!clip) {
    showError('Choose a 2–10 s clip of the voice, or record one.');
    return;
  }
  if (clip.seconds && (clip.seconds < 2 || clip.seconds > 10)) {
    showError(`The clip lasts ${clip.seconds.toFixed(1)} s; a known speaker's clip must last 2 to 10 seconds.`);
    return;
  }
  let dataUrl = await readDataUrl(clip.blob);
  dataUrl = dataUrl.replace(/^data:;/, 'data:application/octet-stream;');
  knownSpeakers.push({ name, dataUrl, seconds: clip.seconds });
  recordedClip = null;
  ui.speakerName.value = '';
  ui.speakerFile.value = '';
  ui.speakerRecord.textContent = `Record ${SPEAKER_CLIP_SECONDS} s`;
  renderSpeakers();
}

function renderSpeakers() {
  ui.speakerList.replaceChildren(...knownSpeakers.map((s, i) => {
    const li = document.createElement('li');
    li.textContent = `${s.name}${s.seconds ? ` (${s.seconds.toFixed(1)} s)` : ''} `;
    const remove = document.createElement('button');
    remove.type = 'button';
    remove.textContent = 'Remove';
    remove.setAttribute('aria-label', `Remove ${s.name}`);
    remove.addEventListener('click', () => { knownSpeakers.splice(i, 1); renderSpeakers(); });
    li.append(remove);
    return li;
  }));
}

async function recordSpeaker() {
  clearError();
  ui.speakerRecord.disabled = true;
  try {
    const chunks = [];
    const mic = await openMicrophone((pcm) => chunks.push(pcm));
    for (let left = SPEAKER_CLIP_SECONDS; left > 0; left--) {
      ui.speakerRecord.textContent = `Recording… ${left}`;
      await new Promise((r) => setTimeout(r, 1000));
    }
    await mic.stop();
    const wav = wavBlob(chunks, 24000);
    recordedClip = { blob: wav, seconds: samplesIn(chunks) / 24000 };
    ui.speakerFile.value = '';
    ui.speakerRecord.textContent = `Recorded ${recordedClip.seconds.toFixed(1)} s; record again`;
  } catch (err) {
    ui.speakerRecord.textContent = `Record ${SPEAKER_CLIP_SECONDS} s`;
    report(err);
  } finally {
    ui.speakerRecord.disabled = false;
  }
}

// ---------- microphone: 24 kHz PCM16 from an AudioWorklet ----------

async function openMicrophone(onPcm) {
  if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new ShownError('The microphone needs a secure page: open the playground over https or on localhost.');
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true },
    });
  } catch (err) {
    throw new ShownError(`The microphone could not be opened (${err.name}): allow this page to use it and try again.`);
  }
  let ctx;
  try {
    ctx = new AudioContext({ sampleRate: 24000 });
  } catch (_) {
    ctx = new AudioContext();  // the worklet resamples to 24 kHz itself
  }
  await ctx.audioWorklet.addModule('playground/pcm-worklet.js');
  const node = new AudioWorkletNode(ctx, 'pcm16-capture', { numberOfOutputs: 1 });
  const source = ctx.createMediaStreamSource(stream);
  node.port.onmessage = (event) => onPcm(new Int16Array(event.data));
  source.connect(node);
  node.connect(ctx.destination);  // the node outputs silence; connecting keeps it running
  await ctx.resume();
  return {
    async stop() {
      node.port.postMessage('flush');
      await new Promise((r) => setTimeout(r, 50));
      stream.getTracks().forEach((t) => t.stop());
      source.disconnect();
      node.disconnect();
      await ctx.close();
    },
  };
}

function samplesIn(chunks) {
  return chunks.reduce((n, c) => n + c.length, 0);
}

function wavBlob(chunks, rate) {
  const samples = samplesIn(chunks);
  const header = new DataView(new ArrayBuffer(44));
  const text = (offset, s) => [...s].forEach((ch, i) => header.setUint8(offset + i, ch.charCodeAt(0)));
  text(0, 'RIFF'); header.setUint32(4, 36 + samples * 2, true); text(8, 'WAVE');
  text(12, 'fmt '); header.setUint32(16, 16, true); header.setUint16(20, 1, true); header.setUint16(22, 1, true);
  header.setUint32(24, rate, true); header.setUint32(28, rate * 2, true); header.setUint16(32, 2, true);
  header.setUint16(34, 16, true); text(36, 'data'); header.setUint32(40, samples * 2, true);
  return new Blob([header.buffer, ...chunks.map((c) => c.buffer)], { type: 'audio/wav' });
}

function base64(int16) {
  const bytes = new Uint8Array(int16.buffer, int16.byteOffset, int16.byteLength);
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

// ---------- live captions: the realtime transcription protocol, or record-then-transcribe ----------

function realtimeUrl() {
  const url = new URL('v1/realtime?intent=transcription', document.baseURI);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return url.toString();
}

// Resolves with an open WebSocket, or null when the endpoint cannot be reached (then we fall back).
function openRealtime(model, onEvent) {
  return new Promise((resolve) => {
    let ws;
    try {
      // Browsers cannot set headers on a WebSocket: the key travels as a subprotocol, as OpenAI's SDK does.
      ws = new WebSocket(realtimeUrl(), apiKey ? ['realtime', `openai-insecure-api-key.${apiKey}`] : ['realtime']);
    } catch (_) {
      resolve(null);
      return;
    }
    let settled = false;
    const settle = (value) => { if (!settled) { settled = true; clearTimeout(timer); resolve(value); } };
    const timer = setTimeout(() => { ws.close(); settle(null); }, REALTIME_OPEN_TIMEOUT_MS);
    ws.onopen = () => {
      ws.send(JSON.stringify({
        type: 'session.update',
        session: {
          type: 'transcription',
          audio: {
            input: {
              format: { type: 'audio/pcm', rate: 24000 },
              transcription: { model },
              turn_detection: { type: 'server_vad' },
            },
          },
        },
      }));
      settle(ws);
    };
    ws.onmessage = (message) => {
      try { onEvent(JSON.parse(message.data)); } catch (err) { console.warn(err); }
    };
    ws.onerror = () => settle(null);
    ws.onclose = (event) => {
      settle(null);
      if (live && live.ws === ws && !live.stopping) {
        showError(`The live session closed${event.reason ? `: ${event.reason}` : ''}.`);
        stopLive();
      }
      if (live && live.ws === ws && live.finished) live.finished();
    };
  });
}

function renderLive() {
  if (!live) return;
  const agreed = [];
  const tentative = [];
  for (const id of live.order) {
    const item = live.items.get(id);
    if (item.done) agreed.push(item.text.trim()); else if (item.text.trim()) tentative.push(item.text.trim());
  }
  const agreedText = [live.fallbackText.trim(), ...agreed].filter(Boolean).join(' ');
  ui.liveAgreed.textContent = agreedText;
  ui.liveTentative.textContent = (agreedText && tentative.length ? ' ' : '') + tentative.join(' ');
}

function liveItem(id) {
  if (!live.items.has(id)) {
    live.items.set(id, { text: '', done: false });
    live.order.push(id);
  }
  return live.items.get(id);
}

function onRealtimeEvent(event) {
  if (!live) return;
  live.lastEvent = Date.now();
  switch (event.type) {
    case 'input_audio_buffer.speech_started':
      live.speaking = true;
      ui.liveStatus.textContent = 'Hearing speech…';
      break;
    case 'input_audio_buffer.committed':
      live.speaking = false;
      liveItem(event.item_id);
      break;
    case 'conversation.item.input_audio_transcription.delta':
      liveItem(event.item_id).text += event.delta || '';
      renderLive();
      break;
    case 'conversation.item.input_audio_transcription.completed': {
      const item = liveItem(event.item_id);
      item.text = event.transcript || '';
      item.done = true;
      renderLive();
      if (!live.speaking) ui.liveStatus.textContent = 'Listening…';
      if (live.stopping) maybeFinish();
      break;
    }
    case 'conversation.item.input_audio_transcription.failed': {
      const item = liveItem(event.item_id);
      item.done = true;
      showError(`A caption failed: ${(event.error && event.error.message) || 'unknown error'}`);
      if (live.stopping) maybeFinish();
      break;
    }
    case 'error': {
      const code = event.error && event.error.code;
      if (live.stopping && code === 'input_audio_buffer_commit_empty') { maybeFinish(); break; }
      showError(`The live session reported an error: ${(event.error && event.error.message) || 'unknown error'}`);
      break;
    }
    default:
      break;
  }
}

// Resolves once the session has had no event for REALTIME_IDLE_MS, or after REALTIME_FINISH_MS.
function quiet(session) {
  const begun = Date.now();
  return new Promise((resolve) => {
    const check = () => {
      const now = Date.now();
      if (now - session.lastEvent > REALTIME_IDLE_MS || now - begun > REALTIME_FINISH_MS) resolve();
      else setTimeout(check, 250);
    };
    check();
  });
}

function maybeFinish() {
  if (live && live.finished && [...live.items.values()].every((i) => i.done)) live.finished();
}

async function startLive() {
  clearError();
  if (live) return;
  const model = ui.liveModel.value;
  if (!model) {
    showError('No model to use yet: the model list has not loaded.');
    return;
  }
  ui.liveStart.disabled = true;
  ui.liveAgreed.textContent = '';
  ui.liveTentative.textContent = '';
  live = { model, ws: null, chunks: [], pending: [], items: new Map(), order: [], fallbackText: '',
           speaking: false, stopping: false, finished: null, mic: null, lastEvent: Date.now() };
  const session = live;
  try {
    ui.liveStatus.textContent = 'Opening the microphone…';
    session.mic = await openMicrophone((pcm) => {
      session.chunks.push(pcm);
      if (session.ws && session.ws.readyState === WebSocket.OPEN) {
        session.ws.send(JSON.stringify({ type: 'input_audio_buffer.append', audio: base64(pcm) }));
      } else if (session.ws === null) {
        session.pending.push(pcm);
      }
    });
    ui.liveStop.disabled = false;
    ui.liveStatus.textContent = 'Connecting…';
    const ws = await openRealtime(model, onRealtimeEvent);
    if (live !== session) { if (ws) ws.close(); return; }
    if (ws) {
      session.ws = ws;
      for (const pcm of session.pending) ws.send(JSON.stringify({ type: 'input_audio_buffer.append', audio: base64(pcm) }));
      ui.liveStatus.textContent = 'Listening… captions appear as you speak.';
    } else {
      session.ws = false;
      ui.liveStatus.textContent = 'Recording. This server has no live endpoint, so the recording is transcribed when you stop.';
    }
    session.pending = [];
  } catch (err) {
    report(err);
    await teardownLive();
  }
}

async function stopLive() {
  if (!live || live.stopping) return;
  const session = live;
  session.stopping = true;
  ui.liveStop.disabled = true;
  ui.liveStatus.textContent = 'Finishing…';
  try {
    if (session.mic) await session.mic.stop();
    if (session.ws) {
      const done = new Promise((resolve) => { session.finished = resolve; });
      session.lastEvent = Date.now();
      if (session.ws.readyState === WebSocket.OPEN) {
        session.ws.send(JSON.stringify({ type: 'input_audio_buffer.commit' }));
      }
      maybeFinish();
      await Promise.race([done, quiet(session)]);
      for (const item of session.items.values()) item.done = true;  // what never completed stays as heard
      renderLive();
      session.ws.close(1000, 'stopped');
    } else if (samplesIn(session.chunks) > 24000 / 4) {
      await transcribeRecording(session);
    }
    ui.liveStatus.textContent = session.ws ? 'Stopped.'
      : 'Stopped. This server has no live endpoint, so the recording was transcribed when you stopped.';
  } catch (err) {
    ui.liveStatus.textContent = '';
    report(err);
  } finally {
    await teardownLive();
  }
}

// Record-then-transcribe: the fallback when /v1/realtime cannot be opened.
async function transcribeRecording(session) {
  ui.liveStatus.textContent = 'Transcribing the recording…';
  const form = new FormData();
  form.append('file', wavBlob(session.chunks, 24000), 'microphone.wav');
  form.append('model', session.model);
  form.append('stream', 'true');
  const response = await api('v1/audio/transcriptions', { method: 'POST', body: form });
  let text = '';
  for await (const event of sse(response)) {
    if (event.type === 'transcript.text.delta') {
      text += event.delta;
      ui.liveTentative.textContent = text;
    } else if (event.type === 'transcript.text.done') {
      session.fallbackText = event.text;
      ui.liveTentative.textContent = '';
      renderLive();
    } else if (event.type === 'error') {
      throw new ShownError(`The transcription failed: ${(event.error && event.error.message) || 'unknown error'}`);
    }
  }
}

async function teardownLive() {
  const session = live;
  live = null;
  if (session && session.mic && !session.stopping) {
    try { await session.mic.stop(); } catch (_) { /* already closed */ }
  }
  if (session && session.ws && session.ws.readyState <= WebSocket.OPEN) session.ws.close();
  ui.liveStart.disabled = false;
  ui.liveStop.disabled = true;
}

// ---------- wiring ----------

function init() {
  for (const id of ['error', 'status', 'transcribe', 'transcript', 'segments', 'player', 'language', 'format',
    'known', 'download', 'response']) ui[id] = $(id);
  Object.assign(ui, {
    fileInput: $('file-input'), model: $('model-select'), responseFormat: $('response-format'),
    speakerName: $('speaker-name'), speakerFile: $('speaker-file'), speakerRecord: $('speaker-record'),
    speakerAdd: $('speaker-add'), speakerList: $('speaker-list'), liveModel: $('live-model'),
    liveStart: $('live-start'), liveStop: $('live-stop'), liveStatus: $('live-status'),
    liveAgreed: document.querySelector('#live-transcript .agreed'),
    liveTentative: document.querySelector('#live-transcript .tentative'),
    keyForm: $('key-form'), keyInput: $('api-key'), drop: $('drop'),
  });
  for (const [code, name] of LANGUAGES) ui.language.append(new Option(name, code));

  apiKey = localStorage.getItem(KEY_STORE) || '';
  ui.keyInput.value = apiKey;
  ui.keyForm.addEventListener('submit', (event) => {
    event.preventDefault();
    apiKey = ui.keyInput.value.trim();
    if (apiKey) localStorage.setItem(KEY_STORE, apiKey); else localStorage.removeItem(KEY_STORE);
    loadModels();
  });

  ui.model.addEventListener('change', modelChanged);
  ui.format.addEventListener('change', showResponse);
  ui.fileInput.addEventListener('change', () => setFile(ui.fileInput.files[0]));
  ui.drop.addEventListener('dragover', (event) => { event.preventDefault(); ui.drop.classList.add('over'); });
  ui.drop.addEventListener('dragleave', () => ui.drop.classList.remove('over'));
  ui.drop.addEventListener('drop', (event) => {
    event.preventDefault();
    ui.drop.classList.remove('over');
    if (event.dataTransfer.files.length) {
      ui.fileInput.files = event.dataTransfer.files;
      setFile(ui.fileInput.files[0]);
    }
  });
  ui.transcribe.addEventListener('click', transcribe);
  ui.segments.addEventListener('click', seekTo);
  ui.player.addEventListener('timeupdate', highlight);
  ui.player.addEventListener('seeked', highlight);
  ui.download.addEventListener('click', download);
  ui.speakerAdd.addEventListener('click', addSpeaker);
  ui.speakerRecord.addEventListener('click', recordSpeaker);
  ui.speakerFile.addEventListener('change', () => { recordedClip = null; });
  ui.liveStart.addEventListener('click', startLive);
  ui.liveStop.addEventListener('click', stopLive);
  modelChanged();
  loadModels();
}

document.addEventListener('DOMContentLoaded', init);
