// GraphiQL for /graphql in development; every file it loads is served by this server.
(function () {
  "use strict";
  // This page is served on the GraphQL endpoint itself: HTTP and WebSocket use its URL.
  var url = window.location.origin + window.location.pathname;
  var subscriptionUrl = url.replace(/^http/, "ws");
  // Subscriptions go over graphql-ws (bundled in GraphiQL); the headers pane is sent as its
  // connectionParams, so {"Authorization": "Bearer <token>"} signs in both transports.
  var fetcher = GraphiQL.createFetcher({ url: url, subscriptionUrl: subscriptionUrl });
  var defaultQuery = [
    "# DataDiver Graph. Sign in with a development token (`datadiver-graph dev-token --user ID`)",
    "# in the Headers pane below:",
    '#   {"Authorization": "Bearer <token>"}',
    "# The headers go with every query and mutation, and as connectionParams for subscriptions.",
    "# Run: Ctrl-Enter, or the play button.",
    "",
    "query Me {",
    "  getCurrentUser { externalId name email }",
    "}",
    "",
    "subscription CurrentUser {",
    "  currentUser { name updatedAt }",
    "}",
    "",
  ].join("\n");
  var root = ReactDOM.createRoot(document.getElementById("graphiql"));
  root.render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultQuery: defaultQuery,
      defaultEditorToolsVisibility: "headers",
      isHeadersEditorEnabled: true,
      inputValueDeprecation: true,
      plugins: [GraphiQLPluginExplorer.explorerPlugin()],
    }),
  );
})();
