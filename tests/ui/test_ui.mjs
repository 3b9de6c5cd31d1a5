// test_ui.mjs - convserve's page and API docs in a real browser (Debian's chromium, driven over the
// DevTools protocol by playwright-core) against the real server binary on a free port.
//
//   node tests/ui/test_ui.mjs --binary build/convserve --models config/models --root . \
//        --out build/ui-screenshots          (tests/ui/run.sh installs playwright-core and runs this)
//
// Checks: the HTTP side of the embedded files (types, ETag/304, HEAD, 405, gzip/406, the CSP and
// its companions, no inline script or style in the pages); the page loads with no console error,
// CSP violation, failed request or unexpected HTTP error; it really runs under the CSP (eval is
// refused); drawing a 3 answers "3"; uploading examples/7.png answers "7"; 1,3,30,30 for cnn_bn
// marks layer 7 with the server's message; /docs renders every operation of openapi.yaml and "Try it
// out" works; with --api-key the page asks for the key, then works, sending it only as a Bearer
// header; with --ui off /, /docs and their files answer 404 as any unknown path. Screenshots go to
// --out and are checked to be non-blank. Prints PASS/FAIL lines and "N passed, M failed"; exits 1 on
// any failure.
import {spawn} from 'node:child_process';
import {createRequire} from 'node:module';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import zlib from 'node:zlib';

const require = createRequire(path.resolve(process.env.UI_TOOLS || '.', 'node_modules') + '/');
const {chromium} = require('playwright-core');

const API_KEY = 'ui-test-key-3f9c';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
// Headless and quiet: no first-run UI, no background connections (this machine's network is
// closed, and a test must not talk to anyone but the server under test).
const CHROMIUM_ARGS = ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                       '--disable-background-networking', '--disable-component-update', '--disable-sync',
                       '--disable-default-apps', '--disable-extensions'];
const TIMEOUT_MS = 20000;
const VIEWPORT = {width: 1280, height: 900};
const README_VIEWPORT = {width: 1100, height: 760};
const SHAPES_MESSAGE = "layer 7 Linear 'fc.0' expects 36864 features, input [1,3,30,30] gives 43264";
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; " +
            "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
const UI_PATHS = ['/', '/ui/app.css', '/ui/app.js', '/ui/favicon.svg', '/docs', '/docs/docs.js', '/docs/openapi.yaml',
                  '/docs/swagger-ui-bundle.js', '/docs/swagger-ui.css', '/docs/swagger-ui-bundle.js.LICENSE.txt',
                  '/docs/LICENSE', '/docs/NOTICE'];

function args() {
    const a = {};
    const argv = process.argv.slice(2);
    for (let i = 0; i < argv.length; i += 2)
        a[argv[i].replace(/^--/, '')] = argv[i + 1];
    for (const k of ['binary', 'models', 'root', 'out'])
        if (!a[k])
            throw new Error(`--${k} is required`);
    return a;
}

let passed = 0, failed = 0;
function check(ok, what, detail) {
    if (ok) {
        passed++;
        console.log(`PASS ${what}`);
    } else {
        failed++;
        console.log(`FAIL ${what}${detail ? ': ' + detail : ''}`);
    }
    return ok;
}

// ---- the server ------------------------------------------------------------------------------

async function startServer(opt, extra, env = {}) {
    const proc = spawn(opt.binary, ['--port', '0', '--models', opt.models, '--log-level', 'info', ...extra],
                       {stdio: ['ignore', 'ignore', 'pipe'], env: {...process.env, ...env}});
    const log = [];
    const port = await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('the server did not start:\n' + log.join(''))), 120000);
        proc.stderr.setEncoding('utf8');
        proc.stderr.on('data', (chunk) => {
            log.push(chunk);
            const m = /listening on http:\/\/\S+:(\d+)/.exec(log.join(''));
            if (m) {
                clearTimeout(timer);
                resolve(Number(m[1]));
            }
        });
        proc.on('exit', (code) => reject(new Error(`the server exited with ${code}:\n${log.join('')}`)));
    });
    return {
        proc, port, log, base: `http://127.0.0.1:${port}`,
        async stop() {
            if (proc.exitCode !== null)
                return proc.exitCode;
            proc.kill('SIGTERM');
            return new Promise((resolve) => proc.on('exit', (code) => resolve(code)));
        },
    };
}

// One raw request, so that headers (Accept-Encoding, If-None-Match) are exactly what is sent.
function request(base, method, pathname, headers = {}) {
    return new Promise((resolve, reject) => {
        const rq = http.request(base + pathname, {method, headers}, (res) => {
            const chunks = [];
            res.on('data', (c) => chunks.push(c));
            res.on('end', () => resolve({status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks)}));
        });
        rq.on('error', reject);
        rq.end();
    });
}

// ---- openapi.yaml ------------------------------------------------------------------------------

// "METHOD path" for every operation, with the line layout openapi.yaml keeps for its tests: paths
// at two spaces under `paths:`, methods at four.
function specOperations(file) {
    const ops = [];
    let inPaths = false, current = null;
    for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
        if (/^\S/.test(line)) {
            inPaths = line.startsWith('paths:');
            continue;
        }
        if (!inPaths)
            continue;
        let m = /^ {2}(\/\S*):\s*$/.exec(line);
        if (m) {
            current = m[1];
            continue;
        }
        m = /^ {4}(get|put|post|delete|options|head|patch|trace):\s*$/.exec(line);
        if (m && current)
            ops.push(`${m[1].toUpperCase()} ${current}`);
    }
    return ops;
}

// ---- the browser -------------------------------------------------------------------------------

// Records what must not happen on a page: console errors, uncaught exceptions, CSP violations,
// failed requests, and HTTP errors other than the expected ones ({path, status}: the 400 of a
// /shapes that breaks, the 401 that makes the page ask for the key).
function watch(page, label) {
    const w = {problems: [], expected: [], requests: []};
    const isExpected = (url, status) =>
        w.expected.some((e) => new URL(url).pathname + new URL(url).search === e.path && status === e.status);
    page.on('console', (m) => {
        if (m.type() !== 'error')
            return;
        const failedLoad = /^Failed to load resource: the server responded with a status of (\d+)/.exec(m.text());
        if (failedLoad && m.location().url && isExpected(m.location().url, Number(failedLoad[1])))
            return;
        w.problems.push(`${label}: console error: ${m.text()} (${m.location().url || ''})`);
    });
    page.on('pageerror', (e) => w.problems.push(`${label}: uncaught: ${e.message}`));
    page.on('requestfailed', (r) => w.problems.push(`${label}: request failed: ${r.url()} ${r.failure().errorText}`));
    page.on('request', (r) => w.requests.push(r));
    page.on('response', (r) => {
        if (r.status() >= 400 && !isExpected(r.url(), r.status()))
            w.problems.push(`${label}: HTTP ${r.status()} for ${r.request().method()} ${r.url()}`);
    });
    return w;
}

async function newPage(context, label) {
    const page = await context.newPage();
    page.setDefaultTimeout(TIMEOUT_MS);
    // CSP violations reach the console too; the event also catches report-only ones.
    await page.addInitScript(() => {
        window.__violations = [];
        document.addEventListener('securitypolicyviolation',
                                  (e) => window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`));
    });
    return {page, w: watch(page, label)};
}

async function noProblems(page, w, what) {
    const violations = await page.evaluate(() => window.__violations);
    const all = [...w.problems, ...violations.map((v) => 'CSP violation: ' + v)];
    check(all.length === 0, `${what}: no console error, CSP violation, failed request or unexpected HTTP error`,
          all.join('; '));
}

// Decodes a screenshot in the browser itself and counts its colours: a blank or single-colour
// page fails.
async function checkScreenshot(browser, file, what) {
    const png = fs.readFileSync(file);
    const page = await browser.newPage();
    const stats = await page.evaluate(async (data) => {
        const img = new Image();
        img.src = 'data:image/png;base64,' + data;
        await img.decode();
        const c = document.createElement('canvas');
        c.width = img.width;
        c.height = img.height;
        const ctx = c.getContext('2d');
        ctx.drawImage(img, 0, 0);
        const px = ctx.getImageData(0, 0, c.width, c.height).data;
        const colours = new Map();
        for (let i = 0; i < px.length; i += 4 * 7) {
            const k = (px[i] << 16) | (px[i + 1] << 8) | px[i + 2];
            colours.set(k, (colours.get(k) || 0) + 1);
        }
        const top = Math.max(...colours.values());
        return {width: c.width, height: c.height, colours: colours.size, dominant: top / (px.length / 28)};
    }, png.toString('base64'));
    await page.close();
    check(stats.colours >= 50 && stats.dominant < 0.9,
          `${what}: screenshot ${path.basename(file)} ${stats.width}x${stats.height} is not blank ` +
          `(${stats.colours} colours, most common ${(stats.dominant * 100).toFixed(0)}%)`);
}

// A "3" in pad coordinates (0..280): an upper bowl and a lower bowl, as a hand would draw it.
function threeStrokes() {
    const bezier = (p0, p1, p2, p3, n) => Array.from({length: n + 1}, (_, i) => {
        const t = i / n, u = 1 - t;
        return [u * u * u * p0[0] + 3 * u * u * t * p1[0] + 3 * u * t * t * p2[0] + t * t * t * p3[0],
                u * u * u * p0[1] + 3 * u * u * t * p1[1] + 3 * u * t * t * p2[1] + t * t * t * p3[1]];
    });
    return [[...bezier([85, 70], [120, 25], [215, 45], [185, 110], 24),
             ...bezier([185, 110], [175, 135], [150, 140], [125, 140], 12),
             ...bezier([125, 140], [230, 140], [225, 245], [140, 240], 24),
             ...bezier([140, 240], [115, 238], [95, 230], [80, 215], 10)]];
}

async function draw(page, strokes) {
    const box = await page.locator('#pad').boundingBox();
    const sx = box.width / 280, sy = box.height / 280;
    for (const s of strokes) {
        await page.mouse.move(box.x + s[0][0] * sx, box.y + s[0][1] * sy);
        await page.mouse.down();
        for (const [x, y] of s.slice(1))
            await page.mouse.move(box.x + x * sx, box.y + y * sy);
        await page.mouse.up();
    }
}

async function topLabel(page) {
    await page.locator('#bars li').first().waitFor();
    return page.locator('#bars li').first().getAttribute('data-label');
}

// ---- the checks ----------------------------------------------------------------------------------

async function checkHttp(srv, root) {
    for (const p of UI_PATHS) {
        const r = await request(srv.base, 'GET', p, {'Accept-Encoding': 'gzip'});
        check(r.status === 200 && r.headers.etag && r.headers['cache-control'] === 'no-cache' &&
              r.headers['x-content-type-options'] === 'nosniff' && r.body.length > 0,
              `GET ${p} -> 200 ${r.headers['content-type']}, ${r.body.length} bytes, ETag, no-cache, nosniff`,
              `status ${r.status}, headers ${JSON.stringify(r.headers)}`);
    }
    const page = await request(srv.base, 'GET', '/');
    const html = page.body.toString('utf8');
    check(page.headers['content-security-policy'] === CSP && page.headers['referrer-policy'] === 'no-referrer' &&
          page.headers['x-frame-options'] === 'DENY' && page.headers['content-type'] === 'text/html;charset=utf-8',
          'GET / carries the Content-Security-Policy, Referrer-Policy no-referrer, X-Frame-Options DENY',
          JSON.stringify(page.headers));
    for (const p of ['/', '/docs']) {
        const body = (await request(srv.base, 'GET', p)).body.toString('utf8');
        const inline = body.match(/<script(?![^>]*\bsrc=)[^>]*>|<style\b|\sstyle=|\son[a-z]+=|javascript:/gi);
        check(!inline, `${p} has no inline script, style, handler or javascript: URL`, String(inline));
    }
    const spec = fs.readFileSync(path.join(root, 'openapi.yaml'));
    const served = await request(srv.base, 'GET', '/docs/openapi.yaml');
    check(served.body.equals(spec), '/docs/openapi.yaml is the repository\'s openapi.yaml, byte for byte');
    const vendored = fs.readFileSync(path.join(root, 'server/ui/vendor/swagger-ui/swagger-ui-bundle.js'));
    const gz = await request(srv.base, 'GET', '/docs/swagger-ui-bundle.js', {'Accept-Encoding': 'gzip, deflate'});
    check(gz.headers['content-encoding'] === 'gzip' && gz.headers.vary === 'Accept-Encoding' &&
          zlib.gunzipSync(gz.body).equals(vendored),
          `/docs/swagger-ui-bundle.js: ${gz.body.length} bytes gzip, Vary: Accept-Encoding, inflates to the vendored file`);
    for (const ae of ['identity', 'br, gzip;q=0', undefined]) {
        const r = await request(srv.base, 'GET', '/docs/swagger-ui-bundle.js', ae ? {'Accept-Encoding': ae} : {});
        const inflated = ae !== undefined;
        check(r.status === 200 && (r.headers['content-encoding'] === undefined) === inflated &&
              (inflated ? r.body : zlib.gunzipSync(r.body)).equals(vendored),
              `Accept-Encoding ${ae === undefined ? 'absent' : ae}: the bundle comes ` +
              (inflated ? 'inflated by the server' : 'gzip-compressed') + ` (${r.body.length} bytes)`);
    }
    const etag = page.headers.etag;
    const again = await request(srv.base, 'GET', '/', {'If-None-Match': etag});
    check(again.status === 304 && again.body.length === 0 && again.headers.etag === etag,
          `If-None-Match ${etag} -> 304 without a body`);
    const head = await request(srv.base, 'HEAD', '/docs');
    check(head.status === 200 && head.body.length === 0 && head.headers['content-security-policy'] === CSP,
          'HEAD /docs -> 200, the headers without the body');
    const post = await request(srv.base, 'POST', '/');
    check(post.status === 405 && post.headers.allow === 'GET' &&
          post.body.toString() === '{"error":"method POST is not allowed on /; use GET"}',
          'POST / -> 405 with Allow: GET', `${post.status} ${post.body}`);
    const near = await request(srv.base, 'GET', '/ui/missing.js');
    check(near.status === 404 && near.body.toString() === '{"error":"no route for GET /ui/missing.js"}',
          'GET /ui/missing.js -> 404 like any unknown path');
}

async function checkPage(browser, srv, opt) {
    const context = await browser.newContext({viewport: VIEWPORT});
    const {page, w} = await newPage(context, 'page');
    const resp = await page.goto(srv.base + '/');
    check(resp.status() === 200, 'the page loads');
    await page.locator('.model[data-model="digits"][aria-current="true"]').waitFor();
    const names = await page.locator('.model').evaluateAll((bs) => bs.map((b) => b.dataset.model));
    // Every folder of the repository with a model.json, in name order, as the server loads them.
    const want = fs.readdirSync(opt.models)
        .filter((d) => fs.existsSync(path.join(opt.models, d, 'model.json'))).sort();
    check(names.join(',') === want.join(','),
          `the page lists the models of the repository: ${names.join(', ')}`);
    const facts = await page.locator('#model-facts').innerText();
    check(/input \[N, 1, 8, 8\]/.test(facts) && /logits \[N, 10\]/.test(facts) && /38,378/.test(facts) &&
          /f32/.test(facts) && /trained/.test(facts) && (await page.locator('#model-ready').innerText()) === 'ready',
          'digits shows its input and output shapes, parameters, precision, weights and readiness',
          facts.replace(/\n/g, ' | '));
    check((await page.locator('#label-list li').count()) === 10, 'digits shows its 10 labels');
    check(await page.locator('#health.ok').isVisible(), 'the server shows as ready');

    // Drawing a 3.
    await draw(page, threeStrokes());
    const drawn = await topLabel(page);
    const drawnMeta = await page.locator('#result-meta').innerText();
    check(drawn === '3', `drawing a 3 on the pad answers "${drawn}" (top of ${await page.locator('#bars li').count()} bars)`,
          await page.locator('#bars').innerText());
    check(/answered in \d+(\.\d+)? ms/.test(drawnMeta) && /\[1,1,8,8\]/.test(drawnMeta),
          `the answer shows the request latency and input: ${drawnMeta}`);
    await page.screenshot({path: path.join(opt.out, 'page-drawing-3.png'), fullPage: true});

    // Uploading examples/7.png.
    await page.locator('#file').setInputFiles(path.join(opt.root, 'examples/7.png'));
    await page.locator('#result-meta', {hasText: '7.png'}).waitFor();
    const uploaded = await topLabel(page);
    const pct = await page.locator('#bars li').first().locator('.pct').innerText();
    check(uploaded === '7', `uploading examples/7.png answers "${uploaded}" (${pct})`);
    await page.screenshot({path: path.join(opt.out, 'page-upload-7.png'), fullPage: true});

    // cnn_bn at 1,3,30,30: layer 7 with the server's own message.
    const shapesPath = '/v2/models/cnn_bn/shapes?input=1,3,30,30';
    w.expected.push({path: shapesPath, status: 400});
    await page.locator('.model[data-model="cnn_bn"]').click();
    await page.locator('#model-title', {hasText: 'cnn_bn'}).waitFor();
    await page.locator('#layers-body tr').first().waitFor();
    await page.locator('#shape-input').fill('1,3,30,30');
    await page.locator('#shape-input').press('Enter');
    await page.locator('#layers-body tr.bad').waitFor();
    const bad = await page.locator('#layers-body tr.bad').getAttribute('data-index');
    const badCells = await page.locator('#layers-body tr.bad td').allInnerTexts();
    const message = await page.locator('#layers-body tr.bad-message').innerText();
    const server = await request(srv.base, 'GET', shapesPath);
    check(bad === '7' && badCells[1] === 'Linear' && badCells[2] === 'fc.0',
          `1,3,30,30 for cnn_bn marks layer ${bad}: ${badCells.slice(0, 3).join(' ')}`);
    check(message === SHAPES_MESSAGE && server.status === 400 &&
          server.body.toString() === JSON.stringify({error: message}),
          `the marked layer shows the server's message: ${message}`);
    check((await page.locator('#layers-body tr.bad').count()) === 1 &&
          (await page.locator('#layers-body tr.after').count()) === 3,
          'only that layer is marked; the 3 after it are greyed');
    await page.screenshot({path: path.join(opt.out, 'page-cnn_bn-30x30.png'), fullPage: true});
    await page.locator('#shape-input').fill('1,3,28,28');
    await page.locator('#shape-input').press('Enter');
    await page.locator('#shapes-summary', {hasText: '[1,10]'}).waitFor();
    const rows = await page.locator('#layers-body tr').count();
    const fc0 = await page.locator('#layers-body tr[data-index="7"] td').allInnerTexts();
    check(rows === 11 && fc0[3] === '[1, 128]' && fc0[4] === '4,718,720' &&
          (await page.locator('#layers-body tr.bad').count()) === 0,
          `1,3,28,28 for cnn_bn: 11 layers, fc.0 gives [1, 128] with 4,718,720 parameters`, fc0.join(' | '));
    check(await page.locator('#layers-head th').count() === 5, 'no inputs column for a chain (no layer has inputs)');

    // Keyboard and labels: a model is chosen with Tab and Enter; every form control has a label.
    await page.locator('.model[data-model="seq_basic"]').focus();
    await page.keyboard.press('Enter');
    await page.locator('#model-title', {hasText: 'seq_basic'}).waitFor();
    check(!(await page.locator('#try').isVisible()) && (await page.locator('#shape-input').inputValue()) === '1,3,32,32',
          'Enter on a focused model shows it (seq_basic: no images, shapes for 1,3,32,32)');
    const unlabelled = await page.evaluate(() => [...document.querySelectorAll('input, canvas#pad')]
        .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map((e) => e.id));
    check(unlabelled.length === 0, 'every input and the drawing pad have a label', unlabelled.join(', '));
    await page.locator('.model[data-model="cnn_bn"]').click();
    await page.locator('#model-title', {hasText: 'cnn_bn'}).waitFor();

    // Graphs are coming: /shapes and the metadata will give layers an `inputs` list (indices, -1
    // for the model input). No graph model is served yet, so this answer is made up by
    // intercepting one /shapes request; the page must show the column for it.
    const graphQuery = '/v2/models/cnn_bn/shapes?input=1,3,28,29';
    await page.route(`**${graphQuery}`, (route) => route.fulfill({
        status: 200, contentType: 'application/json',
        body: JSON.stringify({model_name: 'cnn_bn', input: [1, 3, 28, 29], output: [1, 10],
                              layers: Array.from({length: 11}, (_, i) => ({
                                  index: i, op: i === 7 ? 'Add' : 'ReLU', name: `l${i}`, output_shape: [1, 10],
                                  ...(i === 0 ? {inputs: [-1]} : i === 7 ? {inputs: [3, 6]} : {})}))}),
    }));
    await page.locator('#shape-input').fill('1,3,28,29');
    await page.locator('#shape-input').press('Enter');
    await page.locator('#layers-head th', {hasText: 'Inputs'}).waitFor();
    const add = await page.locator('#layers-body tr[data-index="7"] td').allInnerTexts();
    const first = await page.locator('#layers-body tr[data-index="0"] td').allInnerTexts();
    check(add[1] === 'Add' && add[5] === '3, 6' && first[5] === 'input' &&
          (await page.locator('#layers-body tr[data-index="1"] td').allInnerTexts())[5] === '',
          'a graph answer (layers with inputs) gets an Inputs column: "3, 6" for an Add, "input" for -1',
          `${add.join(' | ')} / ${first.join(' | ')}`);
    await page.unroute(`**${graphQuery}`);

    // The models page links to the docs and the metrics.
    check(await page.locator('a[href="/docs"]').count() === 1 && await page.locator('a[href="/metrics"]').count() === 1,
          'the page links to /docs and /metrics');
    await noProblems(page, w, 'page');

    // The page runs under its CSP. DevTools' own evaluation is exempt, so the attempts run from a
    // timer, as the page's code would: eval must throw EvalError and an inline <script> must not
    // run. This happens on a page of its own, whose (expected) violations are not counted.
    const probe = await context.newPage();
    await probe.goto(srv.base + '/');
    const refused = await probe.evaluate(() => new Promise((resolve) => setTimeout(() => {
        let evaluated;
        try {
            evaluated = eval('"eval ran"');
        } catch (e) {
            evaluated = e.name;
        }
        const s = document.createElement('script');
        s.textContent = 'window.__inlineRan = true;';
        document.head.append(s);
        resolve([evaluated, window.__inlineRan === true]);
    }, 0)));
    check(refused[0] === 'EvalError' && refused[1] === false,
          'the Content-Security-Policy is enforced: eval throws EvalError, an inline script does not run',
          JSON.stringify(refused));
    await probe.close();

    // A server with Triton's repository extension lists its models in /v2/repository/index; none
    // has it yet, so /v2 and the index are made up here: the page must take the READY ones from it.
    const indexed = await context.newPage();
    const wi = watch(indexed, 'repository index');
    let indexAsked = 0;
    await indexed.route('**/v2', async (route) => {
        const real = await route.fetch();
        const body = await real.json();
        body.extensions.push('model_repository');
        await route.fulfill({response: real, json: body});
    });
    await indexed.route('**/v2/repository/index', (route) => {
        indexAsked++;
        return route.fulfill({json: [{name: 'digits', version: '1', state: 'READY'},
                                     {name: 'cnn_bn', version: '1', state: 'UNAVAILABLE', reason: 'unloaded'}]});
    });
    await indexed.goto(srv.base + '/');
    await indexed.locator('.model[data-model="digits"][aria-current="true"]').waitFor();
    const listed = await indexed.locator('.model').evaluateAll((bs) => bs.map((b) => b.dataset.model));
    check(indexAsked === 1 && listed.join(',') === 'digits' && wi.problems.length === 0,
          `with the repository extension the page lists the index's READY models: ${listed.join(', ')}`,
          wi.problems.join('; '));
    await indexed.close();

    // The README's picture: the digits model answering a drawn 3.
    const readme = await context.newPage();
    await readme.setViewportSize(README_VIEWPORT);
    await readme.goto(srv.base + '/#digits');
    await readme.locator('.model[data-model="digits"][aria-current="true"]').waitFor();
    await draw(readme, threeStrokes());
    await topLabel(readme);
    await readme.screenshot({path: path.join(opt.out, 'readme.png')});
    await context.close();
    for (const f of ['page-drawing-3.png', 'page-upload-7.png', 'page-cnn_bn-30x30.png', 'readme.png'])
        await checkScreenshot(browser, path.join(opt.out, f), 'page');
}

async function checkDocs(browser, srv, opt) {
    const context = await browser.newContext({viewport: VIEWPORT});
    const {page, w} = await newPage(context, 'docs');
    await page.goto(srv.base + '/docs');
    await page.locator('.opblock').first().waitFor();
    const rendered = await page.locator('.opblock').evaluateAll((blocks) => blocks.map((b) => {
        const method = b.querySelector('.opblock-summary-method').textContent.trim();
        const p = b.querySelector('.opblock-summary-path');
        return `${method} ${p.getAttribute('data-path') || p.textContent.trim()}`;
    }));
    const spec = specOperations(path.join(opt.root, 'openapi.yaml'));
    const missing = spec.filter((op) => !rendered.includes(op));
    check(spec.length >= 19 && missing.length === 0 && rendered.length === spec.length,
          `/docs renders all ${spec.length} operations of openapi.yaml (${rendered.length} rendered)`,
          'missing: ' + missing.join(', '));
    const title = await page.locator('.info .title').innerText();
    check(/convserve/.test(title), `/docs shows the API title: ${title.replace(/\s+/g, ' ')}`);
    await page.screenshot({path: path.join(opt.out, 'docs.png'), fullPage: false});

    // "Try it out" on GET /v2/health/live, sent to this server (whatever openapi.yaml's servers say).
    const op = page.locator('#operations-health-serverLive');
    await op.locator('.opblock-summary').click();
    await op.locator('button.try-out__btn').click();
    await op.locator('button.execute').click();
    const status = await op.locator('.live-responses-table tbody .response-col_status').first().innerText();
    const body = await op.locator('.live-responses-table tbody .response-col_description pre').first().innerText();
    check(status.trim() === '200' && /"live":\s*true/.test(body),
          `"Try it out" on GET /v2/health/live answers ${status.trim()} from this server`, body);
    await page.screenshot({path: path.join(opt.out, 'docs-try-it.png'), fullPage: false});
    await noProblems(page, w, 'docs');
    await context.close();
    await checkScreenshot(browser, path.join(opt.out, 'docs.png'), 'docs');
    await checkScreenshot(browser, path.join(opt.out, 'docs-try-it.png'), 'docs');
}

async function checkKey(browser, srv, opt) {
    const context = await browser.newContext({viewport: VIEWPORT});
    const {page, w} = await newPage(context, 'page with key');
    w.expected.push({path: '/v2', status: 401});
    await page.goto(srv.base + '/');
    await page.locator('#key-panel').waitFor();
    check(await page.locator('#key-input').isVisible() && !(await page.locator('#app').isVisible()),
          'with --api-key the page asks for the key and shows nothing else');
    await page.screenshot({path: path.join(opt.out, 'page-key-prompt.png')});
    await page.locator('#key-input').fill(API_KEY);
    await page.locator('#key-form button[type="submit"]').click();
    await page.locator('.model[data-model="digits"][aria-current="true"]').waitFor();
    check(!(await page.locator('#key-panel').isVisible()), 'after the key the models load');
    await page.locator('#file').setInputFiles(path.join(opt.root, 'examples/7.png'));
    await page.locator('#result-meta', {hasText: '7.png'}).waitFor();
    check(await topLabel(page) === '7', 'with the key, uploading examples/7.png answers "7"');
    const api = w.requests.filter((r) => /\/(v2|predictions|metrics)/.test(new URL(r.url()).pathname));
    const withKey = await Promise.all(api.map(async (r) => (await r.allHeaders()).authorization));
    const afterKey = withKey.slice(1);
    check(afterKey.length >= 5 && afterKey.every((h) => h === 'Bearer ' + API_KEY),
          `every API request after the key carries Authorization: Bearer (${afterKey.length} requests)`,
          JSON.stringify(withKey));
    check(w.requests.every((r) => !r.url().includes(API_KEY)), 'the key never appears in a URL');
    const stored = await page.evaluate(() => [sessionStorage.getItem('convserve.apiKey'), localStorage.length]);
    check(stored[0] === API_KEY && stored[1] === 0, 'the key is kept in sessionStorage (this tab), not localStorage');
    await page.screenshot({path: path.join(opt.out, 'page-with-key.png'), fullPage: true});
    // With a key the Metrics link cannot send it, so the page fetches /metrics itself and shows it.
    await page.locator('#metrics-link').click();
    await page.locator('#metrics-dialog[open]').waitFor();
    const metrics = await page.locator('#metrics-text').innerText();
    check(/convserve_requests_total\{model="digits",version="1",code="200"\}/.test(metrics) && !page.url().includes('/metrics'),
          'with the key, Metrics opens the /metrics text in a dialog (fetched with the key)', page.url());
    await page.keyboard.press('Escape');
    check(!(await page.locator('#metrics-dialog[open]').count()), 'Escape closes the metrics dialog');
    await noProblems(page, w, 'page with key');

    // The docs page of the same tab uses that key for "Try it out" on a route that needs it.
    await page.goto(srv.base + '/docs');
    const op = page.locator('#operations-metadata-serverMetadata');
    await op.locator('.opblock-summary').click();
    await op.locator('button.try-out__btn').click();
    await op.locator('button.execute').click();
    const status = await op.locator('.live-responses-table tbody .response-col_status').first().innerText();
    check(status.trim() === '200', `/docs with the key: "Try it out" on GET /v2 answers ${status.trim()}`);
    await noProblems(page, w, 'docs with key');

    // A wrong key is refused and asked for again.
    const other = await context.newPage();
    const w2 = watch(other, 'wrong key');
    w2.expected.push({path: '/v2', status: 401});
    await other.goto(srv.base + '/');
    await other.evaluate(() => sessionStorage.clear());
    await other.locator('#key-input').fill('not-the-key');
    await other.locator('#key-form button[type="submit"]').click();
    await other.locator('#key-error', {hasText: 'refused'}).waitFor();
    check(await other.locator('#key-panel').isVisible(), 'a wrong key is refused and the page asks again');
    check(w2.problems.length === 0, 'wrong key: no problem besides the expected 401s', w2.problems.join('; '));
    await context.close();
    await checkScreenshot(browser, path.join(opt.out, 'page-key-prompt.png'), 'key');
    await checkScreenshot(browser, path.join(opt.out, 'page-with-key.png'), 'key');
}

async function checkOff(srv, how) {
    for (const p of ['/', '/docs', '/ui/app.js', '/docs/openapi.yaml']) {
        const r = await request(srv.base, 'GET', p);
        check(r.status === 404 && r.body.toString() === JSON.stringify({error: `no route for GET ${p}`}),
              `${how}: GET ${p} -> 404 ${r.body.toString()}`);
    }
    const live = await request(srv.base, 'GET', '/v2/health/live');
    check(live.status === 200, `${how}: the API still answers`);
}

async function main() {
    const opt = args();
    fs.mkdirSync(opt.out, {recursive: true});
    const browser = await chromium.launch({executablePath: CHROMIUM, args: CHROMIUM_ARGS});
    const servers = [];
    try {
        const srv = await startServer(opt, []);
        servers.push(srv);
        await checkHttp(srv, opt.root);
        await checkPage(browser, srv, opt);
        await checkDocs(browser, srv, opt);
        const keyed = await startServer(opt, ['--api-key', API_KEY]);
        servers.push(keyed);
        const open = await request(keyed.base, 'GET', '/');
        const closed = await request(keyed.base, 'GET', '/v2');
        check(open.status === 200 && closed.status === 401, 'with --api-key: / is open (to ask for the key), /v2 is 401');
        await checkKey(browser, keyed, opt);
        const off = await startServer(opt, ['--ui', 'off']);
        servers.push(off);
        await checkOff(off, '--ui off');
        const envOff = await startServer(opt, [], {CONVSERVE_UI: 'off'});
        servers.push(envOff);
        await checkOff(envOff, 'CONVSERVE_UI=off');
    } catch (e) {
        check(false, 'the browser test ran to its end', e.stack);
    } finally {
        await browser.close();
        for (const s of servers) {
            const code = await s.stop();
            check(code === 0, `the server on port ${s.port} stopped cleanly (exit ${code})`);
        }
    }
    console.log(`screenshots: ${opt.out}`);
    console.log(`${passed} passed, ${failed} failed`);
    process.exit(failed ? 1 : 0);
}

main();
