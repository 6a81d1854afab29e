/** The fields of a session (出诊) and of a weekly template, checked as the API checks them
 * (domain/booking.new_session), and turned into the API's body. */
import type { Period, SessionSpec, Template, VisitType } from '@/api/booking'
import { MAX_SLOT_MINUTES } from '@/api/booking'
import { minutesOf, PERIOD_HOURS } from '@/utils/booking'

export interface SessionForm {
  department: string
  doctor_id: string
  date: string
  weekday: number
  period: Period
  start: string
  end: string
  slot_minutes: number
  capacity: number
  visit_type: VisitType
  fee_yuan: number
}

export function blankSession(date = ''): SessionForm {
  return {
    department: '',
    doctor_id: '',
    date,
    weekday: 1,
    period: 'am',
    ...PERIOD_HOURS.am,
    slot_minutes: 30,
    capacity: 5,
    visit_type: 'general',
    fee_yuan: 0,
  }
}

export function fromTemplate(t: Template): Partial<SessionForm> {
  return {
    department: t.department,
    doctor_id: t.doctor_id ?? '',
    weekday: t.weekday,
    period: t.period,
    start: t.start,
    end: t.end,
    slot_minutes: t.slot_minutes,
    capacity: t.capacity,
    visit_type: t.visit_type ?? 'general',
    fee_yuan: (t.fee_cents ?? 0) / 100,
  }
}

/** What is wrong with the fields, as message keys (empty when they may be sent). */
export function sessionProblems(f: SessionForm): Partial<Record<keyof SessionForm, string>> {
  const out: Partial<Record<keyof SessionForm, string>> = {}
  if (!f.department.trim()) out.department = 'booking.departmentRequired'
  if (!f.start || !f.end || minutesOf(f.start) >= minutesOf(f.end)) out.end = 'booking.endAfterStart'
  if (!(f.slot_minutes >= 5 && f.slot_minutes <= MAX_SLOT_MINUTES)) out.slot_minutes = 'booking.slotWidth'
  else if (!out.end && (minutesOf(f.end) - minutesOf(f.start)) % f.slot_minutes) out.slot_minutes = 'booking.slotsDoNotFit'
  if (!(f.capacity >= 1 && f.capacity <= 500)) out.capacity = 'booking.capacityRange'
  if (!(f.fee_yuan >= 0)) out.fee_yuan = 'booking.feeInvalid'
  return out
}

/** Slots the session will have (0 when the times do not fit). */
export function slotCount(f: SessionForm): number {
  const minutes = minutesOf(f.end) - minutesOf(f.start)
  return f.slot_minutes > 0 && minutes > 0 && minutes % f.slot_minutes === 0 ? minutes / f.slot_minutes : 0
}

export function toSpec(f: SessionForm): Omit<SessionSpec, 'date'> {
  return {
    department: f.department.trim(),
    period: f.period,
    start: f.start,
    end: f.end,
    slot_minutes: f.slot_minutes,
    capacity: f.capacity,
    visit_type: f.visit_type,
    fee_cents: Math.round(f.fee_yuan * 100),
    ...(f.doctor_id ? { doctor_id: f.doctor_id } : {}),
  }
}
