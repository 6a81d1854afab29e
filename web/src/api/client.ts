/**
 * The one way the client talks to the Yilian API: relative `/api` by default (same origin
 * locally; a CloudFront behaviour on AWS), the bearer token from sign-in, and the API's error
 * shape `{"error": {"code", "message", "details"}}` turned into an `ApiError`.
 */
import { session, tokenExpired } from '@/auth/session'

export const API_BASE = (import.meta.env.VITE_API_BASE || '/api').replace(/\/+$/, '')

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message)
    this.name = 'ApiError'
  }

  get forbidden(): boolean {
    return this.status === 403
  }

  get unauthenticated(): boolean {
    return this.status === 401
  }
}

type Query = Record<string, string | number | boolean | undefined | null>

export interface RequestOptions {
  body?: unknown
  query?: Query
  signal?: AbortSignal
  /** Sign-in itself: no token is sent and a 401 is the caller's to show. */
  anonymous?: boolean
  headers?: Record<string, string>
}

let onUnauthenticated: (error: ApiError) => void = () => {}

/** The router registers what a 401 on a signed-in call does (back to sign-in). */
export function setUnauthenticatedHandler(handler: (error: ApiError) => void): void {
  onUnauthenticated = handler
}

function url(path: string, query?: Query): string {
  const params = new URLSearchParams()
  for (const [k, v] of Object.entries(query ?? {})) {
    if (v !== undefined && v !== null && v !== '') params.set(k, String(v))
  }
  const qs = params.toString()
  return `${API_BASE}${path}${qs ? `?${qs}` : ''}`
}

async function errorOf(resp: Response): Promise<ApiError> {
  let body: unknown = null
  try {
    body = await resp.json()
  } catch {
    /* not JSON: a proxy or gateway page */
  }
  const err = (body as { error?: { code?: string; message?: string; details?: Record<string, unknown> } } | null)?.error
  return new ApiError(
    resp.status,
    err?.code || `HTTP_${resp.status}`,
    err?.message || resp.statusText || `HTTP ${resp.status}`,
    err?.details ?? {},
  )
}

export async function request<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
  if (!options.anonymous && tokenExpired()) {
    // Known to be expired: no request with it; the same way back to sign-in as a 401.
    const error = new ApiError(401, 'TOKEN_EXPIRED', 'the token has expired')
    onUnauthenticated(error)
    throw error
  }
  const headers: Record<string, string> = { Accept: 'application/json', ...options.headers }
  if (options.body !== undefined) headers['Content-Type'] = 'application/json'
  if (!options.anonymous && session.token) headers.Authorization = `Bearer ${session.token}`
  let resp: Response
  try {
    resp = await fetch(url(path, options.query), {
      method,
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      signal: options.signal,
    })
  } catch (e) {
    if ((e as Error).name === 'AbortError') throw e
    throw new ApiError(0, 'NETWORK', (e as Error).message || 'network error')
  }
  if (!resp.ok) {
    const error = await errorOf(resp)
    if (error.unauthenticated && !options.anonymous) onUnauthenticated(error)
    throw error
  }
  if (resp.status === 204) return undefined as T
  const text = await resp.text()
  return (text ? JSON.parse(text) : undefined) as T
}

/** Binary answers (a rendered image): the same token and error shape, the body as a Blob.
 * `Accept` names the media type: the gateway answers bytes only for a binary Accept. */
export async function requestBlob(path: string, query?: Query, accept = 'image/jpeg', signal?: AbortSignal): Promise<Blob> {
  if (tokenExpired()) {
    const error = new ApiError(401, 'TOKEN_EXPIRED', 'the token has expired')
    onUnauthenticated(error)
    throw error
  }
  const headers: Record<string, string> = { Accept: accept }
  if (session.token) headers.Authorization = `Bearer ${session.token}`
  let resp: Response
  try {
    resp = await fetch(url(path, query), { headers, signal })
  } catch (e) {
    if ((e as Error).name === 'AbortError') throw e
    throw new ApiError(0, 'NETWORK', (e as Error).message || 'network error')
  }
  if (!resp.ok) {
    const error = await errorOf(resp)
    if (error.unauthenticated) onUnauthenticated(error)
    throw error
  }
  return resp.blob()
}

/** A URL of the API for an element to load itself (an unauthenticated <img src>). */
export function apiUrl(path: string, query?: Query): string {
  return url(path, query)
}

export const api = {
  get: <T>(path: string, query?: Query, signal?: AbortSignal) => request<T>('GET', path, { query, signal }),
  post: <T>(path: string, body?: unknown, headers?: Record<string, string>) =>
    request<T>('POST', path, { body: body ?? {}, headers }),
  patch: <T>(path: string, body: unknown) => request<T>('PATCH', path, { body }),
  put: <T>(path: string, body: unknown) => request<T>('PUT', path, { body }),
  del: <T>(path: string, body?: unknown) => request<T>('DELETE', path, { body }),
}
