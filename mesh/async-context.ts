// The process's one async context. Node runs the hook of every enabled AsyncLocalStorage on each
// promise and callback it creates, so a call's scope (call-scope.ts) rides as a value in
// OpenTelemetry's context rather than in a storage of its own, and this is OpenTelemetry's
// context manager: one storage instead of two. call-scope.ts installs it, tracing or not, since
// deadlines and request ids must travel in a process that exports no spans too.
import { AsyncLocalStorage } from "node:async_hooks";
import { context, ROOT_CONTEXT, type Context, type ContextManager } from "@opentelemetry/api";

class StorageContextManager implements ContextManager {
  readonly #storage = new AsyncLocalStorage<Context>();

  active(): Context {
    return this.#storage.getStore() ?? ROOT_CONTEXT;
  }

  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(ctx: Context, fn: F, thisArg?: ThisParameterType<F>, ...args: A): ReturnType<F> {
    return thisArg === undefined ? this.#storage.run(ctx, fn, ...args) : this.#storage.run(ctx, () => fn.apply(thisArg, args));
  }

  /** Functions only: nothing here binds event emitters (OpenTelemetry's instrumentations would). */
  bind<T>(ctx: Context, target: T): T {
    if (typeof target !== "function") return target;
    const fn = target as (...args: unknown[]) => unknown;
    const manager = this;
    return function (this: unknown, ...args: unknown[]) {
      return manager.with(ctx, () => fn.apply(this, args));
    } as T;
  }

  enable(): this {
    return this;
  }

  disable(): this {
    this.#storage.disable();
    return this;
  }
}

let installed = false;
/** Ours, if it is OpenTelemetry's context manager (another may have been installed first). */
let ours: StorageContextManager | undefined;

/**
 * Makes this OpenTelemetry's context manager, once per process. Where another was installed first
 * the call is a no-op, and that one carries the call scope as well.
 */
export function installAsyncContext(): void {
  if (installed) return;
  installed = true;
  const manager = new StorageContextManager();
  if (context.setGlobalContextManager(manager)) ours = manager;
}

/**
 * The active context, as context.active() answers it, read straight from our storage when it is
 * the manager: the API's lookup of its global manager costs more than the read itself, on every
 * call and every log line. (context.disable() disables our storage too: both then answer ROOT.)
 */
export function activeContext(): Context {
  return ours ? ours.active() : context.active();
}

/** context.with(ctx, fn, undefined, ...args), straight on our storage when it is the manager. */
export function withContext<A extends unknown[], R>(ctx: Context, fn: (...args: A) => R, ...args: A): R {
  return ours ? ours.with(ctx, fn, undefined, ...args) : context.with(ctx, fn, undefined, ...args);
}
