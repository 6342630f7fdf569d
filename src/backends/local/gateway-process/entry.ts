/**
 * The gateway process's entry in caravan's runtime bundle (runtime-build.ts compiles it; a
 * control plane running from sources starts `<runtime>/<entry>.js`, a compiled one its own
 * dist/ copy). Its own module: the bundler needs the name without loading the client.
 */
export const GATEWAY_PROCESS_ENTRY = "backends/local/gateway-process/main";
