// The API reference page: Swagger UI over this server's own OpenAPI document. Nothing is fetched from
// elsewhere (no validator badge, no remote configuration); "Try it out" sends requests to this server
// with the key given under "Authorize".
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/api/openapi.json",
    dom_id: "#reference",
    deepLinking: true,
    validatorUrl: null,
    queryConfigEnabled: false,
    displayRequestDuration: true,
    persistAuthorization: false,
    tryItOutEnabled: false,
  });
});
