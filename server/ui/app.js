/* app.js - convserve's page: lists the models, tries them with a drawing or an image, and shows
 * each layer's output shape for an input size, all through the server's public HTTP API.
 *
 * No framework and no build step: the server embeds this file as it is. Text from the server is
 * only ever put into the page with textContent, never parsed as HTML, and the page's
 * Content-Security-Policy forbids inline script and style, so styles are set through classes and
 * the CSSOM (element.style), which that policy allows. */
'use strict';

/* The API key, when the server wants one, lives in sessionStorage: it survives a reload of this
 * tab, is gone when the tab closes, is never shared with other tabs or written to disk by us, and
 * is sent only in the Authorization header. */
const KEY_STORE = 'convserve.apiKey';
const TOP_K = 5;                /* bars shown for an answer */
const DRAW_MAX_SIDE = 32;       /* a drawing pad is offered to gray models up to this input size */
const DRAW_LINE = 22;           /* stroke width on the 280-pixel pad */
const DRAW_INK = 40;            /* pad pixels brighter than this count as ink */
/* The drawing is cropped to its ink, centred on a square, reduced to SUPERSAMPLE times the input
 * and averaged in SUPERSAMPLE x SUPERSAMPLE blocks: how the UCI digits the model learnt from were
 * made (32x32 bitmaps counted in 4x4 blocks into 8x8 images of 0..16). */
const SUPERSAMPLE = 4;
const PREDICT_DELAY_MS = 120;   /* after the pen lifts, so a multi-stroke digit sends once */
const FREE_SIZE_DEFAULT = 32;   /* H and W proposed for /shapes when the model accepts any */
const LABEL_MAX_CH = 14;        /* longer labels are cut with an ellipsis in the bars */

const state = {
    key: sessionStorage.getItem(KEY_STORE) || '',
    models: [],      /* [{name, meta, ready}] in the server's order */
    current: null,   /* the shown model's entry */
    seq: 0,          /* numbers predictions, so that a late answer never overwrites a newer one */
    preview: null,   /* object URL of the picked file's preview */
};

const $ = (id) => document.getElementById(id);

/* Makes an element with properties (textContent, className, ...) and children. */
function el(tag, props, ...children) {
    const e = document.createElement(tag);
    Object.assign(e, props || {});
    for (const c of children)
        e.append(c);
    return e;
}

function show(node, visible) {
    node.hidden = !visible;
}

function setError(node, message) {
    node.textContent = message || '';
    show(node, !!message);
}

/* ---- the API ------------------------------------------------------------------------------ */

class KeyNeeded extends Error {}

/* Calls the server and returns {status, body, ms}: body parsed when it is JSON, ms the time until
 * the whole answer was in. A 401 means the key is missing or wrong, wherever it happens. */
async function api(path, options = {}) {
    const headers = new Headers(options.headers || {});
    if (state.key)
        headers.set('Authorization', 'Bearer ' + state.key);
    const t0 = performance.now();
    const res = await fetch(path, {...options, headers, cache: 'no-store', credentials: 'omit'});
    const type = res.headers.get('Content-Type') || '';
    const body = type.startsWith('application/json') ? await res.json() : await res.text();
    const ms = performance.now() - t0;
    if (res.status === 401)
        throw new KeyNeeded(body && body.error ? body.error : 'API key needed');
    return {status: res.status, body, ms};
}

function errorText(r) {
    if (r.body && typeof r.body === 'object' && r.body.error)
        return r.body.error;
    return `HTTP ${r.status}`;
}

/* The loaded models' names. A server with Triton's repository extension (announced in /v2's
 * extensions) lists them in POST /v2/repository/index (those READY, or all when it gives no
 * state); otherwise the names come from /metrics, where every loaded model labels its series from
 * the start. Asking the index only when announced keeps the page free of failed requests. */
async function listModels(extensions) {
    if ((extensions || []).includes('model_repository')) {
        const index = await api('/v2/repository/index',
                                {method: 'POST', headers: {'Content-Type': 'application/json'}, body: '{}'});
        if (index.status === 200 && Array.isArray(index.body))
            return [...new Set(index.body.filter((m) => !m.state || m.state === 'READY').map((m) => m.name))];
    }
    const r = await api('/metrics');
    if (r.status !== 200)
        throw new Error('cannot list the models: /metrics answered ' + errorText(r));
    const names = new Set();
    for (const m of String(r.body).matchAll(/\{model="((?:[^"\\]|\\.)*)"/g)) {
        const name = m[1].replace(/\\(.)/g, '$1');
        if (name)
            names.add(name);
    }
    return [...names];
}

/* ---- formatting --------------------------------------------------------------------------- */

const number = new Intl.NumberFormat('en-US');

/* [-1, 3, -1, -1] as "[N, 3, H, W]" (input) or "[N, 64, ?, ?]" (output). */
function formatShape(dims, input) {
    return '[' + dims.map((d, i) => {
        if (d >= 0)
            return String(d);
        if (i === 0)
            return 'N';
        if (input && dims.length === 4)
            return i === 2 ? 'H' : i === 3 ? 'W' : '?';
        return '?';
    }).join(', ') + ']';
}

function formatParams(n) {
    if (n >= 1e6)
        return (n / 1e6).toFixed(1) + ' M';
    if (n >= 1e3)
        return (n / 1e3).toFixed(1) + ' k';
    return String(n);
}

/* 99.9%, 12.3%, 0.04%; "<0.01%" and ">99.99%" rather than a misleading 0.00% or 100.00%. */
function formatPercent(pct) {
    if (pct < 0.01)
        return '<0.01%';
    if (pct > 99.99)
        return '>99.99%';
    return pct.toFixed(pct >= 99.95 || pct < 0.1 ? 2 : 1) + '%';
}

function formatInputs(inputs) {
    return inputs.map((i) => (i < 0 ? 'input' : String(i))).join(', ');
}

/* ---- the models --------------------------------------------------------------------------- */

/* What an image becomes for this model: [C, H, W], or null when it takes no images (the server's
 * rules: 1 or 3 channels, a fixed size or preprocess.resize) or does not classify. */
function imageInput(meta) {
    const dims = meta.inputs[0].shape;
    const out = meta.outputs[0].shape;
    if (dims.length !== 4 || (dims[1] !== 1 && dims[1] !== 3) || out.length !== 2)
        return null;
    const resize = meta.preprocess ? meta.preprocess.resize : null;
    const h = resize && resize[0] > 0 ? resize[0] : dims[2];
    const w = resize && resize[1] > 0 ? resize[1] : dims[3];
    if (h < 1 || w < 1)
        return null;
    return [dims[1], h, w];
}

function renderModelList() {
    const list = $('model-list');
    list.replaceChildren();
    for (const m of state.models) {
        const meta = m.meta;
        const dot = el('span', {className: 'dot ' + (m.ready ? 'ok' : 'no'), title: m.ready ? 'ready' : 'not ready'},
                       el('span', {className: 'visually-hidden', textContent: m.ready ? '(ready)' : '(not ready)'}));
        const tags = el('span', {className: 'tags'},
                        el('span', {className: 'tag', textContent: meta.precision}),
                        el('span', {className: 'tag', textContent: formatParams(meta.parameters) + ' params'}));
        if (meta.random_weights)
            tags.append(el('span', {className: 'tag warn', textContent: 'random weights'}));
        const button = el('button', {type: 'button', className: 'model'},
                          el('span', {className: 'model-name'}, el('span', {textContent: m.name}), dot),
                          el('span', {className: 'model-io',
                                      textContent: formatShape(meta.inputs[0].shape, true) + ' → ' +
                                                   formatShape(meta.outputs[0].shape, false)}),
                          tags);
        button.dataset.model = m.name;
        button.addEventListener('click', () => {
            location.hash = encodeURIComponent(m.name);
        });
        list.append(el('li', {}, button));
    }
}

function fact(term, value, mono) {
    return el('div', {}, el('dt', {textContent: term}),
              el('dd', {textContent: value, className: mono ? 'mono' : ''}));
}

function describePreprocess(p) {
    if (!p)
        return 'none (tensors only)';
    const parts = [p.color, `resize ${p.resize[0]}×${p.resize[1]}`];
    if (p.invert)
        parts.push('inverted');
    return parts.join(', ');
}

function showModel(name) {
    const m = state.models.find((x) => x.name === name) || state.models[0];
    if (!m)
        return;
    state.current = m;
    state.seq++;
    for (const b of document.querySelectorAll('.model'))
        b.setAttribute('aria-current', String(b.dataset.model === m.name));
    const meta = m.meta;
    $('model-title').textContent = m.name;
    const ready = $('model-ready');
    ready.textContent = m.ready ? 'ready' : 'not ready';
    ready.className = 'pill ' + (m.ready ? 'ok' : 'no');
    $('model-facts').replaceChildren(
        fact('Input', `${meta.inputs[0].name} ${formatShape(meta.inputs[0].shape, true)}`, true),
        fact('Output', `${meta.outputs[0].name} ${formatShape(meta.outputs[0].shape, false)}`, true),
        fact('Parameters', number.format(meta.parameters)),
        fact('Precision', meta.precision),
        fact('Weights', meta.random_weights ? 'random (seeded PyTorch init)' : 'trained'),
        fact('Layers', String(meta.layers.length)),
        fact('Max batch', String(meta.max_batch_size)),
        fact('Images', describePreprocess(meta.preprocess)));
    const labels = meta.labels || [];
    /* The class index is shown where the label is not simply that number. */
    $('label-list').replaceChildren(...labels.map((l, i) => (l === String(i)
        ? el('li', {textContent: l})
        : el('li', {}, el('span', {className: 'index', textContent: String(i)}), l))));
    show($('model-labels'), labels.length > 0);
    setupTry(meta);
    setupShapes(meta);
}

/* ---- trying a model ----------------------------------------------------------------------- */

function setupTry(meta) {
    const image = imageInput(meta);
    show($('try'), !!image);
    clearResult();
    if (!image)
        return;
    const [c, h, w] = image;
    const pad = c === 1 && h <= DRAW_MAX_SIDE && w <= DRAW_MAX_SIDE;
    show($('draw'), pad);
    $('try-hint').textContent = pad
        ? `Draw in the black square, or send an image file; it is resized to ${h}×${w} gray.`
        : `Send an image file; the server resizes it to ${h}×${w} ${c === 3 ? 'RGB' : 'gray'}.`;
    if (meta.random_weights)
        $('try-hint').textContent += ' This model has random weights, so its answers mean nothing.';
    const seen = $('seen');
    seen.width = w;
    seen.height = h;
    $('seen-caption').textContent = `What the model sees (${h}×${w})`;
    clearPad();
    $('file').value = '';
    show($('file-preview'), false);
}

function clearResult() {
    $('bars').replaceChildren();
    $('result-meta').textContent = `The answer appears here: the ${TOP_K} likeliest classes.`;
    setError($('try-error'), '');
}

function showPrediction(r, what) {
    const p = r.body.predictions[0];
    const labelled = state.current.meta.labels || [];
    const bars = p.top.map((t) => {
        const pct = t.probability * 100;
        const fill = el('span', {className: 'fill'});
        fill.style.width = Math.max(pct, 0.5).toFixed(2) + '%';
        const label = t.label !== undefined ? t.label : (labelled[t.index] || String(t.index));
        const li = el('li', {},
                      el('span', {className: 'label', textContent: label, title: label}),
                      el('span', {className: 'track'}, fill),
                      el('span', {className: 'pct', textContent: formatPercent(pct)}));
        li.dataset.label = label;
        li.setAttribute('aria-label', `${label}: ${pct.toFixed(1)} percent`);
        return li;
    });
    $('bars').replaceChildren(...bars);
    const longest = Math.max(...bars.map((li) => li.dataset.label.length));
    $('bars').style.setProperty('--label', `${Math.min(longest, LABEL_MAX_CH) + 1}ch`);
    $('result-meta').textContent =
        `${what}: answered in ${r.ms.toFixed(1)} ms · input ${JSON.stringify(r.body.input_shape)} · ` +
        `top ${p.top.length} of ${p.probabilities.length} classes`;
}

/* Sends one image body to /predictions and shows the answer, unless a newer one was sent since. */
async function predict(body, contentType, what) {
    const m = state.current;
    const seq = ++state.seq;
    setError($('try-error'), '');
    try {
        const r = await api(`/predictions/${encodeURIComponent(m.name)}?top=${TOP_K}`,
                            {method: 'PUT', headers: {'Content-Type': contentType}, body});
        if (seq !== state.seq)
            return;
        if (r.status !== 200) {
            $('bars').replaceChildren();
            $('result-meta').textContent = '';
            setError($('try-error'), errorText(r));
            return;
        }
        showPrediction(r, what);
    } catch (e) {
        handleFailure(e, $('try-error'));
    }
}

/* -- the drawing pad -- */

const pen = {down: false, x: 0, y: 0, inked: false, timer: 0};

function padContext() {
    return $('pad').getContext('2d', {willReadFrequently: true});
}

function clearPad() {
    const ctx = padContext();
    ctx.fillStyle = '#000';
    ctx.fillRect(0, 0, $('pad').width, $('pad').height);
    pen.inked = false;
    const seen = $('seen');
    const sctx = seen.getContext('2d');
    sctx.fillStyle = '#000';
    sctx.fillRect(0, 0, seen.width, seen.height);
}

function padPoint(ev) {
    const pad = $('pad');
    const r = pad.getBoundingClientRect();
    return [(ev.clientX - r.left) * pad.width / r.width, (ev.clientY - r.top) * pad.height / r.height];
}

function stroke(x0, y0, x1, y1) {
    const ctx = padContext();
    ctx.strokeStyle = '#fff';
    ctx.fillStyle = '#fff';
    ctx.lineWidth = DRAW_LINE;
    ctx.lineCap = 'round';
    ctx.lineJoin = 'round';
    ctx.beginPath();
    ctx.moveTo(x0, y0);
    ctx.lineTo(x1, y1);
    ctx.stroke();
    pen.inked = true;
}

function setupPad() {
    const pad = $('pad');
    pad.addEventListener('pointerdown', (ev) => {
        ev.preventDefault();
        pad.setPointerCapture(ev.pointerId);
        show($('file-preview'), false); /* the answer will be about the drawing */
        $('file').value = '';
        clearTimeout(pen.timer);
        pen.down = true;
        [pen.x, pen.y] = padPoint(ev);
        stroke(pen.x, pen.y, pen.x, pen.y);
    });
    pad.addEventListener('pointermove', (ev) => {
        if (!pen.down)
            return;
        const [x, y] = padPoint(ev);
        stroke(pen.x, pen.y, x, y);
        [pen.x, pen.y] = [x, y];
    });
    const lift = () => {
        if (!pen.down)
            return;
        pen.down = false;
        clearTimeout(pen.timer);
        pen.timer = setTimeout(sendDrawing, PREDICT_DELAY_MS);
    };
    pad.addEventListener('pointerup', lift);
    pad.addEventListener('pointercancel', lift);
    $('pad-clear').addEventListener('click', () => {
        clearPad();
        clearResult();
    });
}

/* The drawing as the model's input: gray values 0..255 of size h x w (see SUPERSAMPLE). */
function drawingToInput(h, w) {
    const pad = $('pad');
    const px = padContext().getImageData(0, 0, pad.width, pad.height).data;
    let x0 = pad.width, y0 = pad.height, x1 = -1, y1 = -1;
    for (let y = 0; y < pad.height; y++) {
        for (let x = 0; x < pad.width; x++) {
            if (px[(y * pad.width + x) * 4] > DRAW_INK) {
                x0 = Math.min(x0, x);
                x1 = Math.max(x1, x);
                y0 = Math.min(y0, y);
                y1 = Math.max(y1, y);
            }
        }
    }
    if (x1 < 0)
        return null;
    /* A square around the ink, so the digit keeps its proportions and fills the frame. */
    const side = Math.max(x1 - x0 + 1, y1 - y0 + 1);
    const square = el('canvas', {width: side, height: side});
    const sq = square.getContext('2d');
    sq.fillStyle = '#000';
    sq.fillRect(0, 0, side, side);
    sq.drawImage(pad, -(x0 - (side - (x1 - x0 + 1)) / 2), -(y0 - (side - (y1 - y0 + 1)) / 2));
    const fine = el('canvas', {width: w * SUPERSAMPLE, height: h * SUPERSAMPLE});
    const fctx = fine.getContext('2d', {willReadFrequently: true});
    fctx.imageSmoothingEnabled = true;
    fctx.imageSmoothingQuality = 'high';
    fctx.drawImage(square, 0, 0, fine.width, fine.height);
    const f = fctx.getImageData(0, 0, fine.width, fine.height).data;
    const out = new Uint8ClampedArray(h * w);
    for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
            let sum = 0;
            for (let dy = 0; dy < SUPERSAMPLE; dy++)
                for (let dx = 0; dx < SUPERSAMPLE; dx++)
                    sum += f[((y * SUPERSAMPLE + dy) * fine.width + x * SUPERSAMPLE + dx) * 4];
            out[y * w + x] = Math.round(sum / (SUPERSAMPLE * SUPERSAMPLE));
        }
    }
    return out;
}

function sendDrawing() {
    const seen = $('seen');
    const gray = drawingToInput(seen.height, seen.width);
    if (!gray) {
        clearResult();
        return;
    }
    const img = new ImageData(seen.width, seen.height);
    for (let i = 0; i < gray.length; i++) {
        img.data[i * 4] = img.data[i * 4 + 1] = img.data[i * 4 + 2] = gray[i];
        img.data[i * 4 + 3] = 255;
    }
    seen.getContext('2d').putImageData(img, 0, 0);
    seen.toBlob((png) => predict(png, 'image/png', 'Your drawing'), 'image/png');
}

/* -- an image file -- */

function sendFile(file) {
    if (!file)
        return;
    if (state.preview)
        URL.revokeObjectURL(state.preview);
    state.preview = URL.createObjectURL(file);
    const img = $('file-preview');
    img.src = state.preview;
    img.alt = 'Preview of ' + file.name;
    show(img, true);
    clearPad(); /* the answer is about this file now, not the drawing */
    predict(file, file.type || 'application/octet-stream', file.name);
}

function setupUpload() {
    const drop = $('drop');
    $('file').addEventListener('change', (ev) => sendFile(ev.target.files[0]));
    drop.addEventListener('dragover', (ev) => {
        ev.preventDefault();
        drop.classList.add('over');
    });
    drop.addEventListener('dragleave', () => drop.classList.remove('over'));
    drop.addEventListener('drop', (ev) => {
        ev.preventDefault();
        drop.classList.remove('over');
        sendFile(ev.dataTransfer.files[0]);
    });
}

/* ---- layers and shapes -------------------------------------------------------------------- */

function setupShapes(meta) {
    const dims = meta.inputs[0].shape.map((d, i) => {
        if (i === 0)
            return 1;
        if (d >= 0)
            return d;
        const resize = meta.preprocess ? meta.preprocess.resize : null;
        return resize && resize[i - 2] > 0 ? resize[i - 2] : FREE_SIZE_DEFAULT;
    });
    $('shape-input').value = dims.join(',');
    showShapes();
}

function layerRow(cells, hasInputs) {
    const [index, op, name, shape, params, inputs] = cells;
    const tr = el('tr', {},
                  el('td', {className: 'num', textContent: String(index)}),
                  el('td', {textContent: op}),
                  el('td', {className: 'mono', textContent: name}),
                  el('td', {className: 'shape', textContent: shape}),
                  el('td', {className: 'num', textContent: params}));
    if (hasInputs)
        tr.append(el('td', {className: 'mono', textContent: inputs}));
    tr.dataset.index = String(index);
    return tr;
}

function renderHead(hasInputs) {
    const cols = [['#', 'num'], ['Op', ''], ['Name', ''], ['Output shape', ''], ['Parameters', 'num']];
    if (hasInputs)
        cols.push(['Inputs', '']);
    $('layers-head').replaceChildren(...cols.map(([t, c]) => el('th', {scope: 'col', textContent: t, className: c})));
    return cols.length;
}

/* Asks /shapes for the typed input. On 400 the server names the first layer that breaks ("layer 7
 * Linear 'fc.0' expects ..."): that row is marked and the message shown under it. */
async function showShapes(ev) {
    if (ev)
        ev.preventDefault();
    const m = state.current;
    const meta = m.meta;
    const typed = $('shape-input').value.trim();
    const dims = typed.split(/[\s,x×]+/).filter(Boolean);
    setError($('shapes-error'), '');
    $('shapes-summary').textContent = '';
    if (dims.length === 0 || !dims.every((d) => /^\d+$/.test(d))) {
        setError($('shapes-error'), 'Type whole numbers separated by commas, e.g. 1,3,28,28.');
        return;
    }
    const url = `/v2/models/${encodeURIComponent(m.name)}/shapes?input=${dims.join(',')}`;
    $('shapes-url').textContent = 'GET ' + url;
    let r;
    try {
        r = await api(url);
    } catch (e) {
        handleFailure(e, $('shapes-error'));
        return;
    }
    if (state.current !== m)
        return;
    const layers = r.status === 200 ? r.body.layers : meta.layers;
    const hasInputs = layers.some((l, i) => Array.isArray(l.inputs) || Array.isArray(meta.layers[i] && meta.layers[i].inputs));
    const ncols = renderHead(hasInputs);
    const rows = [];
    let bad = -1;
    if (r.status !== 200) {
        const message = errorText(r);
        const named = /^layer (\d+)\b/.exec(message);
        bad = named ? Number(named[1]) : -1;
        setError($('shapes-error'), bad >= 0 ? `Layer ${bad} breaks at this input size:` : message);
        if (bad < 0) {
            $('layers-body').replaceChildren();
            return;
        }
        for (const [i, l] of meta.layers.entries()) {
            const tr = layerRow([i, l.op, l.name, i < bad ? '…' : '—', number.format(l.parameters),
                                 formatInputs(l.inputs || [])], hasInputs);
            if (i === bad) {
                tr.className = 'bad';
                tr.cells[3].textContent = '✗ breaks';
                rows.push(tr);
                const td = el('td', {colSpan: ncols, textContent: message});
                const msg = el('tr', {className: 'bad-message'}, td);
                msg.dataset.index = String(i);
                rows.push(msg);
                continue;
            }
            if (i > bad)
                tr.className = 'after';
            rows.push(tr);
        }
    } else {
        for (const [i, l] of layers.entries()) {
            const known = meta.layers[i] || {};
            const inputs = l.inputs || known.inputs || [];
            rows.push(layerRow([l.index, l.op, l.name, formatShape(l.output_shape, false),
                                number.format(known.parameters || 0), formatInputs(inputs)], hasInputs));
        }
        $('shapes-summary').textContent =
            `${JSON.stringify(r.body.input)} → ${JSON.stringify(r.body.output)} through ${layers.length} layers`;
    }
    $('layers-body').replaceChildren(...rows);
    if (bad >= 0)
        $('layers-body').querySelector('tr.bad').scrollIntoView({block: 'nearest'});
}

/* ---- the key, metrics, start-up ----------------------------------------------------------- */

function handleFailure(e, where) {
    if (e instanceof KeyNeeded) {
        askKey(state.key ? 'The server refused this key.' : '');
        return;
    }
    setError(where, 'The server did not answer: ' + e.message);
}

function askKey(message) {
    show($('app'), false);
    show($('key-panel'), true);
    setError($('key-error'), message);
    $('health').textContent = 'API key needed';
    $('health').className = 'pill no';
    $('key-input').focus();
}

async function showMetrics(ev) {
    /* Without a key the link opens /metrics itself; with one, the browser could not send the key
     * along, so the text is fetched with it and shown here. */
    if (!state.key)
        return;
    ev.preventDefault();
    try {
        const r = await api('/metrics');
        $('metrics-text').textContent = r.status === 200 ? r.body : errorText(r);
        $('metrics-dialog').showModal();
    } catch (e) {
        handleFailure(e, $('load-error'));
    }
}

async function load() {
    setError($('load-error'), '');
    try {
        const server = await api('/v2');
        if (server.status !== 200)
            throw new Error('/v2 answered ' + errorText(server));
        show($('key-panel'), false);
        show($('key-forget'), !!state.key);
        $('version').textContent = `v${server.body.version}`;
        const health = await api('/v2/health/ready');
        $('health').textContent = health.status === 200 ? 'ready' : 'not ready';
        $('health').className = 'pill ' + (health.status === 200 ? 'ok' : 'no');
        const names = await listModels(server.body.extensions);
        state.models = await Promise.all(names.map(async (name) => {
            const path = '/v2/models/' + encodeURIComponent(name);
            const [meta, ready] = await Promise.all([api(path), api(path + '/ready')]);
            if (meta.status !== 200)
                throw new Error(`${path} answered ${errorText(meta)}`);
            return {name, meta: meta.body, ready: ready.status === 200};
        }));
        renderModelList();
        show($('app'), true);
        const wanted = decodeURIComponent(location.hash.slice(1));
        const first = state.models.find((m) => m.name === 'digits') || state.models[0];
        showModel(state.models.some((m) => m.name === wanted) ? wanted : first && first.name);
    } catch (e) {
        if (e instanceof KeyNeeded) {
            if (state.key)
                sessionStorage.removeItem(KEY_STORE);
            askKey(state.key ? 'The server refused this key.' : '');
            state.key = '';
            return;
        }
        setError($('load-error'), 'The page could not load the models: ' + e.message);
        $('health').textContent = 'unreachable';
        $('health').className = 'pill no';
    }
}

function start() {
    setupPad();
    setupUpload();
    $('shapes-form').addEventListener('submit', showShapes);
    $('metrics-link').addEventListener('click', showMetrics);
    $('metrics-close').addEventListener('click', () => $('metrics-dialog').close());
    $('key-form').addEventListener('submit', (ev) => {
        ev.preventDefault();
        state.key = $('key-input').value.trim();
        $('key-input').value = '';
        sessionStorage.setItem(KEY_STORE, state.key);
        load();
    });
    $('key-forget').addEventListener('click', () => {
        sessionStorage.removeItem(KEY_STORE);
        state.key = '';
        location.reload();
    });
    window.addEventListener('hashchange', () => showModel(decodeURIComponent(location.hash.slice(1))));
    load();
}

start();
