/**
 * The gateway process's entry in caravan's runtime bundle (runtime-build.ts compiles it; the
 * control plane starts `<runtime>/<entry>.js`). Its own module: the bundler needs the name
 * without loading the control plane's side.
 */
export const GATEWAY_PROCESS_ENTRY = "backends/local/gateway-process/main";
