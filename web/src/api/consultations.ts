/**
 * Remote consultation (远程会诊) API (functions/consultations/app.py, issue 8): the request,
 * the centre's board, an expert's worklist and calendar, one consultation with the actions
 * the caller may take, the experts the centre may invite, and the accounting. Every action
 * names the version the caller saw ({version}); a step already taken is 409 REPLAYED.
 */
import { api } from './client'

export const KINDS = ['routine', 'urgent', 'mdt'] as const
export type Kind = (typeof KINDS)[number]
export const MODES = ['video', 'written'] as const
export type Mode = (typeof MODES)[number]

export type Status =
  | 'REQUESTED'
  | 'MORE_INFO'
  | 'ASSIGNING'
  | 'SCHEDULED'
  | 'IN_PROGRESS'
  | 'REPORTED'
  | 'COMPLETED'
  | 'DECLINED'
  | 'CANCELLED'
  | 'EXPIRED'
  | 'NO_SHOW'
/** The open states, in the order a consultation goes through them (the board's columns). */
export const OPEN_STATUSES: Status[] = ['REQUESTED', 'MORE_INFO', 'ASSIGNING', 'SCHEDULED', 'IN_PROGRESS', 'REPORTED']
/** While these last the accepted experts and the requester read the patient's record. */
export const ACTIVE_STATUSES: Status[] = ['ASSIGNING', 'SCHEDULED', 'IN_PROGRESS', 'REPORTED']

export type InviteState = 'invited' | 'accepted' | 'declined' | 'expired'
export type Action =
  | 'accept'
  | 'return'
  | 'decline'
  | 'schedule'
  | 'no_show'
  | 'amend'
  | 'cancel'
  | 'acknowledge'
  | 'respond'
  | 'opinion'
  | 'sign'
export type NoShowParty = 'requester' | 'expert' | 'patient'

export interface Party {
  subject: string
  name: string
  institution_id: string
  department: string
  title: string
}

export interface Opinion {
  findings: string
  recommendations: string
  filed_at?: string
}

export interface Invitation {
  expert: Party
  state: InviteState
  invited_at: string
  due_at: string
  lead: boolean
  responded_at: string
  reason: string
  opinion: Opinion | null
  /** only the caller's own invitation carries its join link */
  join_url: string
}

export interface Session {
  start: string
  minutes: number
  room?: string
  provider?: string
  reminded?: string
  /** only for the requester */
  requester_join_url?: string
}

export interface Report extends Opinion {
  signed_by: string
  signed_by_name: string
  signed_title: string
  institution_id: string
  signed_at: string
  opinions: (Opinion & { name: string; department: string })[]
  recommend_referral: Record<string, unknown> | null
}

export interface HistoryEntry {
  at: string
  action: string // request, accept, return, decline, amend, respond, schedule, remind, session_held, opinion, sign, acknowledge, cancel, no_show, escalate, invite_next, expire, auto_acknowledge
  from: string
  to: string
  by: string
  by_name: string
  note?: string
}

export interface Consultation {
  consultation_id: string
  consortium_id: string
  person_id: string
  requester: Party
  centre_institution_id: string
  kind: Kind
  mode: Mode
  specialty: string
  question: string
  summary: string
  attachments: { documents?: string[]; studies?: string[] }
  preferred_times: string[]
  status: Status
  created_at: string
  updated_at: string
  version: number
  due_at: string
  required_accepts: number
  invitations: Invitation[]
  session: Session | null
  report: Report | null
  escalated: boolean
  rounds: number
  closed_reason: string
  reported_at: string
  history: HistoryEntry[]
  my_part: 'expert' | 'requester' | 'centre' | ''
  actions: Action[]
}

/** One line of the board and the worklists. */
export interface Row {
  consultation_id: string
  person_id: string
  kind: Kind
  mode: Mode
  specialty: string
  status: Status
  created_at: string
  due_at: string
  escalated: boolean
  requester: { name: string; institution_id: string }
  centre_institution_id: string
  experts: { name: string; state: InviteState; lead: boolean }[]
  session_start: string | null
  version: number
  overdue?: boolean
  my_state?: InviteState
}

export interface CalendarEntry {
  consultation_id: string
  start: string
  minutes: number | null
  specialty: string
  join_url: string
}

export interface Worklist {
  as_expert: Row[]
  requested: Row[]
  calendar: CalendarEntry[]
}

export interface Candidate {
  doctor_id: string
  name: string
  institution_id: string
  department: string
  title: string
  workload: number
}

export interface NewConsultation {
  person_id: string
  centre_institution_id: string
  kind: Kind
  mode: Mode
  specialty: string
  question: string
  summary: string
  attachments: { documents: string[]; studies: string[] }
  preferred_times: string[]
}

export interface AccountRow {
  n: number
  by_kind: Partial<Record<Kind, number>>
  fee_fen: number
  fee_yuan: number
  median_minutes_to_report: number | null
}

export interface ExpertAccount extends AccountRow {
  doctor_id: string
  name: string
  department: string
  institution_id: string
  title: string
}

export interface DepartmentAccount extends AccountRow {
  institution_id: string
  department: string
}

export interface InstitutionAccount {
  institution_id: string
  consulting_n: number
  requesting_n: number
  fee_received_fen: number
  fee_retained_fen: number
  fee_received_yuan: number
  fee_retained_yuan: number
}

export interface Accounting {
  from: string
  to: string
  experts: ExpertAccount[]
  departments: DepartmentAccount[]
  institutions: InstitutionAccount[]
}

/** What a resident sees (GET /me/consultations; the mini-program). */
export interface ResidentConsultation {
  consultation_id: string
  kind: Kind
  mode: Mode
  specialty: string
  status: Status
  created_at: string
  requester: { name: string; institution_id: string }
  experts: { name: string; institution_id: string; department: string; title: string }[]
  report: Report | null
}

const c = (id: string) => `/consultations/${encodeURIComponent(id)}`

export const consultations = {
  request: (body: NewConsultation) => api.post<Consultation>('/consultations', body),
  board: () => api.get<{ consultations: Row[] }>('/consultations', { box: 'board' }).then((r) => r.consultations),
  worklist: () => api.get<Worklist>('/consultations'),
  get: (id: string) => api.get<Consultation>(c(id)),
  candidates: (id: string) => api.get<{ candidates: Candidate[] }>(`${c(id)}/candidates`).then((r) => r.candidates),
  /** One step on the consultation, naming the version the caller saw. */
  act: (id: string, action: Action, version: number, body: Record<string, unknown> = {}) =>
    api.post<Consultation>(`${c(id)}/${action}`, { ...body, version }),
  accounting: (from: string, to: string) => api.get<Accounting>('/consultations/accounting', { from, to }),
  mine: () => api.get<{ consultations: ResidentConsultation[] }>('/me/consultations').then((r) => r.consultations),
}
