import type { BackendProvider } from "../registry.ts";
import { CaravanError } from "../../errors.ts";

export const provider: BackendProvider = {
  name: "kubernetes",
  open: async () => {
    throw new CaravanError("UNSUPPORTED", "the kubernetes backend is being built");
  },
};
