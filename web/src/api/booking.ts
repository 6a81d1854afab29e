/**
 * Appointment booking API (functions/booking/app.py; shapes from services/booking.py and
 * domain/booking.py): schedules and their templates, the reserved quota per department, slot
 * search, booking for a patient, the appointment's changes and the day list for check-in.
 * Times are ISO-8601 with +08:00 (Asia/Shanghai); dates YYYY-MM-DD; clock times HH:MM.
 */
import { api } from './client'

export const PERIODS = ['am', 'pm', 'evening'] as const
export type Period = (typeof PERIODS)[number]
export const VISIT_TYPES = ['general', 'specialist', 'special_disease'] as const
export type VisitType = (typeof VISIT_TYPES)[number]
export type Quota = 'public' | 'reserved'
export type AppointmentStatus = 'BOOKED' | 'CHECKED_IN' | 'CANCELLED' | 'NO_SHOW'
export type AppointmentAction = 'cancel' | 'reschedule' | 'check_in'
/** Slots are 5 to 60 minutes wide (分时段预约). */
export const MAX_SLOT_MINUTES = 60

/** What an institution admin publishes: one session (出诊) of a doctor or a department. */
export interface SessionSpec {
  department: string
  date: string // YYYY-MM-DD
  period: Period
  start: string // HH:MM
  end: string
  slot_minutes: number
  capacity: number // per slot
  visit_type?: VisitType
  fee_cents?: number
  doctor_id?: string
  institution_id?: string
}

export interface Session {
  session_id: string
  consortium_id: string
  institution_id: string
  department: string
  doctor_id: string | null
  doctor_name: string
  date: string
  period: Period
  start: string
  end: string
  slot_minutes: number
  capacity: number
  visit_type: VisitType
  fee_cents: number
  reserved_share: number
  release_hours: number
  status: 'OPEN' | 'CANCELLED'
  cancel_reason: string
  created_at: string
  created_by: string
}

/** A slot as a searcher sees it (Slot.view): the public fields, and for clinicians the
 * reserved places and their release. */
export interface Slot {
  slot_id: string
  session_id: string
  institution_id: string
  department: string
  doctor_id: string | null
  doctor_name: string
  visit_type: VisitType
  fee_cents: number
  start: string
  end: string
  status: 'OPEN' | 'CANCELLED'
  opens_at: string
  /** places the public may book now */
  free: number
  // clinicians only
  capacity?: number
  reserved?: number
  booked?: number
  /** reserved places still held (0 once released) */
  reserved_free?: number
  release_at?: string
  released?: boolean
  /** places a referral may book now (reserved or public) */
  free_for_referral?: number
}

export interface Template extends Omit<SessionSpec, 'date'> {
  weekday: number // 1 Monday … 7 Sunday
  template_id: string
  institution_id: string
}

export type NewTemplate = Omit<SessionSpec, 'date'> & { weekday: number; template_id?: string }

export interface QuotaConfig {
  department: string
  reserved_share: number // 0..0.8 of each slot
  release_hours: number // 0..336
}

export interface Quotas {
  institution_id: string
  default_share: number
  default_release_hours: number
  items: QuotaConfig[]
}

export interface AppointmentHistory {
  at: string
  action: string // book, cancel, reschedule, check_in, no_show
  by: { sub: string; role: string; name: string }
  reason?: string
}

export interface Appointment {
  appointment_id: string
  consortium_id: string
  person_id: string
  patient_name: string
  slot_id: string
  session_id: string
  institution_id: string
  department: string
  doctor_id: string | null
  doctor_name: string
  start: string
  end: string
  quota: Quota
  status: AppointmentStatus
  booked_by: { sub: string; role: string; name: string }
  created_at: string
  updated_at: string
  referral_id: string | null
  fee_cents: number
  visit_type: VisitType
  history: AppointmentHistory[]
  /** what the caller may do now */
  actions: AppointmentAction[]
}

/** What a referral shows of its booking (`referral.appointment`). */
export interface AppointmentSummary {
  appointment_id: string
  slot_id: string
  institution_id: string
  department: string
  doctor_name: string
  start: string
  end: string
  quota: Quota
  status: AppointmentStatus
}

export interface NewAppointment {
  slot_id: string
  person_id?: string
  referral_id?: string
  reserved?: boolean
}

export interface SlotQuery {
  institution_id: string
  department?: string
  doctor_id?: string
  date?: string
  from?: string
  to?: string
}

export interface DayList {
  institution_id: string
  date: string
  items: Appointment[]
  count: number
}

const a = (id: string) => `/appointments/${encodeURIComponent(id)}`
const withKey = (key?: string) => (key ? { 'Idempotency-Key': key } : undefined)

export const booking = {
  // schedules (institution admin; consortium admin with institution_id)
  publish: (spec: SessionSpec) => api.post<{ session: Session; slots: Slot[] }>('/schedules', spec),
  cancelSession: (sessionId: string, reason: string) =>
    api.post<{ session_id: string; status: 'CANCELLED'; bookings_cancelled: number }>(
      `/schedules/${encodeURIComponent(sessionId)}/cancel`,
      { reason },
    ),
  leave: (doctorId: string, from: string, to: string, reason: string) =>
    api.post<{ doctor_id: string; sessions_cancelled: number; bookings_cancelled: number }>('/schedules/leave', {
      doctor_id: doctorId,
      from,
      to,
      reason,
    }),
  templates: (institutionId?: string) =>
    api.get<{ items: Template[] }>('/schedules/templates', { institution_id: institutionId }).then((r) => r.items),
  saveTemplate: (body: NewTemplate) => api.post<Template>('/schedules/templates', body),
  publishTemplates: (from: string, weeks: number, institutionId?: string) =>
    api.post<{ created: number; skipped: number }>('/schedules/templates/publish', {
      from,
      weeks,
      ...(institutionId ? { institution_id: institutionId } : {}),
    }),
  quotas: (institutionId?: string) => api.get<Quotas>('/schedules/quotas', { institution_id: institutionId }),
  setQuota: (body: QuotaConfig & { institution_id?: string }) =>
    api.put<QuotaConfig & { institution_id: string }>('/schedules/quotas', body),
  // slots and appointments
  slots: (query: SlotQuery, signal?: AbortSignal) =>
    api.get<{ items: Slot[]; count: number }>('/slots', { ...query }, signal).then((r) => r.items),
  slotFhir: (slotId: string) => api.get<Record<string, unknown>>(`/slots/${encodeURIComponent(slotId)}/fhir`),
  book: (body: NewAppointment, idempotencyKey?: string) => api.post<Appointment>('/appointments', body, withKey(idempotencyKey)),
  dayList: (date: string, institutionId?: string) =>
    api.get<DayList>('/appointments', { date, institution_id: institutionId }),
  get: (id: string) => api.get<Appointment>(a(id)),
  fhir: (id: string) => api.get<Record<string, unknown>>(`${a(id)}/fhir`),
  cancel: (id: string, reason: string) => api.post<Appointment>(`${a(id)}/cancel`, { reason }),
  reschedule: (id: string, slotId: string) => api.post<Appointment>(`${a(id)}/reschedule`, { slot_id: slotId }),
  checkIn: (id: string) => api.post<Appointment>(`${a(id)}/check-in`, {}),
}

/** A slot's reserved places go public this many hours before it starts. */
export function releaseHours(slot: Pick<Slot, 'start' | 'release_at'>): number | null {
  if (!slot.release_at) return null
  return Math.round((Date.parse(slot.start) - Date.parse(slot.release_at)) / 3_600_000)
}

/** 25.00 from 2500 fen. */
export const yuan = (cents: number) => (cents / 100).toFixed(2)
