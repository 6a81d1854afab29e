/**
 * Unsent form data survives a session expiry: forms keep a draft in sessionStorage as they
 * change, the draft is restored after the same user signs in again, and removed on submit or
 * sign-out. A draft belongs to the user who typed it: another user never sees it.
 */
import { type UnwrapRef, watch } from 'vue'
import { session } from './session'

const PREFIX = 'yilian.draft.'

interface Stored<T> {
  owner: string
  saved_at: number
  data: T
}

export function loadDraft<T>(key: string): T | null {
  try {
    const stored = JSON.parse(sessionStorage.getItem(PREFIX + key) ?? 'null') as Stored<T> | null
    if (!stored || stored.owner !== session.claims?.sub) return null
    return stored.data
  } catch {
    return null
  }
}

export function saveDraft<T>(key: string, data: T): void {
  const owner = session.claims?.sub
  if (!owner) return
  const stored: Stored<T> = { owner, saved_at: Date.now(), data }
  sessionStorage.setItem(PREFIX + key, JSON.stringify(stored))
}

export function clearDraft(key: string): void {
  sessionStorage.removeItem(PREFIX + key)
}

/** Drafts typed by someone other than `owner` (or everyone's, without one) are dropped. */
export function dropDrafts(keepOwner?: string): void {
  for (let i = sessionStorage.length - 1; i >= 0; i--) {
    const key = sessionStorage.key(i)
    if (!key?.startsWith(PREFIX)) continue
    try {
      const stored = JSON.parse(sessionStorage.getItem(key) ?? 'null') as Stored<unknown> | null
      if (keepOwner && stored?.owner === keepOwner) continue
    } catch {
      /* unreadable: drop it */
    }
    sessionStorage.removeItem(key)
  }
}

/**
 * Keeps `state` (a reactive object) in a draft: restores it now if a draft exists, then saves
 * every change. Returns whether a draft was restored.
 */
export function useDraft<T extends object>(key: string, state: T): boolean {
  const draft = loadDraft<UnwrapRef<T>>(key)
  if (draft) Object.assign(state, draft)
  watch(state, (value) => saveDraft(key, value), { deep: true })
  return draft !== null
}
