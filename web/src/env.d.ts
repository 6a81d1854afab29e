/// <reference types="vite/client" />

interface ImportMetaEnv {
  /** Base URL of the Yilian API; relative `/api` (same origin) unless set at build time. */
  readonly VITE_API_BASE?: string
}

interface ImportMeta {
  readonly env: ImportMetaEnv
}

declare module '*.vue' {
  import type { DefineComponent } from 'vue'
  const component: DefineComponent<object, object, unknown>
  export default component
}
