/**
 * The patient index API (functions/empi_api/app.py): register, search, read, link/merge,
 * review queue. Identifiers and phone numbers always come back masked.
 */
import { api } from './client'

export type Sex = 'male' | 'female'
export type IdentifierType = 'id_card' | 'health_card' | 'insurance' | 'local'
export type MatchOutcome = 'MATCH' | 'POSSIBLE_MATCH' | 'NO_MATCH'
export const SEARCH_KINDS = ['name', 'id_card', 'phone', 'health_card'] as const
export type SearchKind = (typeof SEARCH_KINDS)[number]

export interface Identifier {
  type: IdentifierType
  value: string // masked: 3301**********1234
  assigner?: string
}

export interface Person {
  person_id: string
  consortium_id: string
  status: 'active' | 'merged'
  name: string
  pinyin: string
  sex: Sex
  birth_date: string
  phone: string | null
  address: string
  household: string
  identifiers: Identifier[]
  links: string[]
  merged_into: string | null
  replaces: string[]
  created_at: string
  updated_at: string
  version: number
}

export interface NewIdentifier {
  type: IdentifierType
  value: string
  assigner?: string
}

export interface Registration {
  name: string
  sex: Sex
  birth_date: string
  phone?: string
  address?: string
  household?: string
  identifiers: NewIdentifier[]
}

export interface RegistrationResult {
  person: Person
  match: {
    outcome: MatchOutcome
    score: number
    candidates: { person_id: string; score: number }[]
  }
}

export interface HistoryItem {
  at: string
  action: string
  by: { subject: string; role: string }
  reason: string
  details: Record<string, unknown> & {
    other?: string
    identifiers?: Identifier[]
    outcome?: string
    score?: number
  }
}

export type Decision = 'link' | 'merge' | 'not_a_match'

export interface ReviewItem {
  review_id: string
  status: 'open' | 'decided'
  score: number
  breakdown: Record<string, number>
  created_at: string
  person: Person // the newer registration
  candidate: Person // the person it may be
  decision: Decision | null
  decided_by: string | null
  decided_at: string | null
  reason: string | null
}

const p = (id: string) => `/persons/${encodeURIComponent(id)}`

export const empi = {
  register: (body: Registration, idempotencyKey?: string) =>
    api.post<RegistrationResult>('/persons', body, idempotencyKey ? { 'Idempotency-Key': idempotencyKey } : undefined),
  search: (kind: SearchKind, q: string) =>
    api.get<{ items: Person[]; count: number }>('/persons', { [kind]: q }).then((r) => r.items),
  person: (id: string) => api.get<Person>(p(id)),
  history: (id: string) => api.get<{ person_id: string; items: HistoryItem[] }>(`${p(id)}/history`).then((r) => r.items),
  fhir: (id: string) => api.get<Record<string, unknown>>(`${p(id)}/fhir`),
  link: (id: string, other: string, reason: string) => api.post<Person>(`${p(id)}/links`, { other_id: other, reason }),
  unlink: (id: string, other: string, reason: string) =>
    api.del<Person>(`${p(id)}/links/${encodeURIComponent(other)}`, { reason }),
  merge: (survivor: string, retired: string, reason: string) =>
    api.post<Person>(`${p(survivor)}/merge`, { retired_id: retired, reason }),
  unmerge: (retired: string, reason: string) => api.post<Person>(`${p(retired)}/unmerge`, { reason }),
  reviews: () => api.get<{ items: ReviewItem[]; count: number }>('/reviews').then((r) => r.items),
  decide: (reviewId: string, decision: Decision, reason: string, survivorId?: string) =>
    api.post<ReviewItem>(`/reviews/${encodeURIComponent(reviewId)}/decision`, {
      decision,
      reason,
      ...(survivorId ? { survivor_id: survivorId } : {}),
    }),
}
