/**
 * What an API token for apps' public endpoints is, on every backend: a prefixed random value
 * shown once, stored only as its SHA-256, with a name a person recognises it by.
 */
import { hash, randomBytes } from "node:crypto";
import { CaravanError } from "../errors.ts";

export const TOKEN_PREFIX = "cvn_";
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** Refuses a name a token cannot have (names go into lists, tables and Secret entries). */
export function checkTokenName(name: string | undefined): void {
  if (name !== undefined && !NAME.test(name)) {
    throw new CaravanError(
      "VALIDATION",
      `invalid token name ${JSON.stringify(name)}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit`,
      { name },
    );
  }
}

/** Refuses a second live token of the same name. */
export function checkNameFree(name: string, taken: boolean): void {
  if (taken) {
    throw new CaravanError(
      "VALIDATION",
      `a token named "${name}" already exists: pick another name, or revoke it first`,
      { name },
    );
  }
}

export function newTokenValue(): string {
  return TOKEN_PREFIX + randomBytes(32).toString("base64url");
}

export function newTokenId(): string {
  return randomBytes(8).toString("hex");
}

/** One-shot hashing (node ≥ 20.12): about 3× faster than createHash, and verify runs per request. */
export function tokenHash(value: string): string {
  return hash("sha256", value, "hex");
}

/** Quick refusal of what cannot be a token, before any lookup. */
export function plausibleToken(value: string, prefixes: string[] = [TOKEN_PREFIX]): boolean {
  return (
    typeof value === "string" &&
    value.length >= 20 &&
    value.length <= 200 &&
    prefixes.some((p) => value.startsWith(p))
  );
}
