/** How bookings look on screen, and the calendar arithmetic the schedule week needs (dates
 * are Beijing dates, YYYY-MM-DD, whatever the browser's time zone). */
import type { AppointmentStatus, Period, Quota, Slot } from '@/api/booking'
import { shanghaiTime } from './format'

type TagType = 'primary' | 'success' | 'warning' | 'danger' | 'info'

export const APPOINTMENT_TAG: Record<AppointmentStatus, TagType> = {
  BOOKED: 'primary',
  CHECKED_IN: 'success',
  CANCELLED: 'info',
  NO_SHOW: 'warning',
}

/** A reserved place (referral, green channel) stands out from a public one. */
export const QUOTA_TAG: Record<Quota, TagType> = { public: 'info', reserved: 'danger' }

export const APPOINTMENT_EVENT: Record<string, TagType> = {
  book: 'primary',
  check_in: 'success',
  reschedule: 'warning',
  cancel: 'info',
  no_show: 'warning',
}

/** 08:30, Beijing time, from an ISO time. */
export const clock = (iso: string) => shanghaiTime(iso).slice(11)
/** 08:00–09:00 */
export const span = (s: { start: string; end: string }) => `${clock(s.start)}–${clock(s.end)}`

/** The period of a session starting at this clock time (HH:MM). */
export function periodOf(hhmm: string): Period {
  const h = Number(hhmm.slice(0, 2))
  return h < 12 ? 'am' : h < 18 ? 'pm' : 'evening'
}

/** Usual clinic hours of each period, as a new session's default. */
export const PERIOD_HOURS: Record<Period, { start: string; end: string }> = {
  am: { start: '08:00', end: '11:00' },
  pm: { start: '14:00', end: '17:00' },
  evening: { start: '18:00', end: '20:00' },
}

const utc = (date: string) => Date.UTC(Number(date.slice(0, 4)), Number(date.slice(5, 7)) - 1, Number(date.slice(8, 10)))

export function addDays(date: string, days: number): string {
  return new Date(utc(date) + days * 86_400_000).toISOString().slice(0, 10)
}

/** 1 Monday … 7 Sunday */
export function weekdayOf(date: string): number {
  return ((new Date(utc(date)).getUTCDay() + 6) % 7) + 1
}

export function mondayOf(date: string): string {
  return addDays(date, 1 - weekdayOf(date))
}

/** Minutes since midnight of HH:MM. */
export const minutesOf = (hhmm: string) => Number(hhmm.slice(0, 2)) * 60 + Number(hhmm.slice(3, 5))

/** Reserved places of a slot of this capacity (domain/booking.reserved_places): the share
 * rounded half up, at least one, never the whole slot unless the share is 1 (a one-place slot
 * stays public). */
export function reservedPlaces(capacity: number, share: number): number {
  if (share <= 0) return 0
  let places = Math.floor(capacity * share + 0.5)
  if (share < 1) {
    places = Math.min(places, capacity - 1)
    if (capacity > 1) places = Math.max(places, 1)
  }
  return Math.max(0, Math.min(capacity, places))
}

/** A slot is bookable now: open, and a place from the quota the booking would use. */
export function bookable(slot: Slot, referral: boolean): boolean {
  if (slot.status !== 'OPEN' || Date.parse(slot.opens_at) > Date.now()) return false
  return (referral ? (slot.free_for_referral ?? slot.free) : slot.free) > 0
}
