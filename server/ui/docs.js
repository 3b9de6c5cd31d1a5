/* docs.js - starts Swagger UI (vendored, /docs/swagger-ui-bundle.js) on the server's openapi.yaml. */
'use strict';

/* The key the models page keeps for this tab (app.js), if any. */
const KEY_STORE = 'convserve.apiKey';

/* openapi.yaml names the default address (127.0.0.1:8080); "Try it out" must talk to the server
 * that served this page, wherever it listens, and may not leave it (connect-src 'self'). */
function toThisServer(request) {
    const url = new URL(request.url, location.href);
    if (url.origin !== location.origin)
        request.url = location.origin + url.pathname + url.search;
    return request;
}

const ui = SwaggerUIBundle({
    url: '/docs/openapi.yaml',
    dom_id: '#swagger-ui',
    /* The plain API layout: the standalone preset's top bar draws its logo with an inline
     * <style>, which the Content-Security-Policy refuses. */
    presets: [SwaggerUIBundle.presets.apis],
    layout: 'BaseLayout',
    deepLinking: true,
    validatorUrl: null, /* no badge from validator.swagger.io: nothing leaves this server */
    persistAuthorization: false,
    displayRequestDuration: true,
    docExpansion: 'list',
    defaultModelsExpandDepth: 0,
    requestInterceptor: toThisServer,
    onComplete: () => {
        const key = sessionStorage.getItem(KEY_STORE);
        if (key)
            ui.preauthorizeApiKey('apiKey', key);
    },
});
