/**
 * Routes, lazy-loaded so the sign-in page stays small. `meta.roles` says who may use a page:
 * the menu shows only those, and a page opened by URL by someone else says so (forbidden).
 */
import { createRouter, createWebHistory, type RouteLocationNormalized } from 'vue-router'
import { setUnauthenticatedHandler } from '@/api/client'
import {
  ADMIN_ROLES,
  CLINICAL_ROLES,
  CONSULTATION_CENTRE_ROLES,
  CONSULTATION_STATS_ROLES,
  endSession,
  IMAGING_ROLES,
  REFERRAL_ROLES,
  REFERRING_ROLES,
  type Role,
  role,
  signedIn,
  STATS_ROLES,
  tokenExpired,
} from '@/auth/session'

declare module 'vue-router' {
  interface RouteMeta {
    public?: boolean
    /** Who may use the page: the menu shows it to them; others opening it see "forbidden". */
    roles?: Role[]
    /** The page's own first read is refused by the API for other roles: show that refusal
     * (its code and message) rather than a client-side one. */
    apiGuarded?: boolean
    title?: string
  }
}

export const router = createRouter({
  history: createWebHistory(import.meta.env.BASE_URL),
  routes: [
    { path: '/login', name: 'login', component: () => import('@/views/LoginView.vue'), meta: { public: true, title: 'login.heading' } },
    // 云胶片: a share link opens it without signing in (the link is the key)
    { path: '/film/:token', name: 'film', component: () => import('@/views/imaging/FilmView.vue'), meta: { public: true, title: 'imaging.film.brand' } },
    { path: '/staff-only', name: 'staff-only', component: () => import('@/views/StaffOnlyView.vue'), meta: { public: true, title: 'staffOnly.title' } },
    {
      path: '/',
      component: () => import('@/layouts/AppLayout.vue'),
      children: [
        { path: '', name: 'home', redirect: () => ({ name: role.value === 'referral_centre' ? 'referrals' : 'patients' }) },
        { path: 'patients', name: 'patients', component: () => import('@/views/empi/PersonSearch.vue'), meta: { roles: CLINICAL_ROLES, title: 'person.searchTitle' } },
        { path: 'patients/new', name: 'register', component: () => import('@/views/empi/PersonRegister.vue'), meta: { roles: CLINICAL_ROLES, title: 'person.registerTitle' } },
        { path: 'patients/:id', name: 'person', component: () => import('@/views/empi/PersonDetail.vue'), meta: { roles: CLINICAL_ROLES, title: 'person.detailTitle' } },
        { path: 'reviews', name: 'reviews', component: () => import('@/views/empi/ReviewQueue.vue'), meta: { roles: ['consortium_admin'], apiGuarded: true, title: 'review.title' } },
        { path: 'referrals', name: 'referrals', component: () => import('@/views/referral/ReferralWorklist.vue'), meta: { roles: REFERRAL_ROLES, title: 'referral.worklistTitle' } },
        { path: 'referrals/new', name: 'referral-new', component: () => import('@/views/referral/ReferralForm.vue'), meta: { roles: REFERRING_ROLES, title: 'referral.formTitle' } },
        { path: 'referrals/stats', name: 'referral-stats', component: () => import('@/views/referral/ReferralStats.vue'), meta: { roles: STATS_ROLES, title: 'referral.statsTitle' } },
        { path: 'referrals/:id', name: 'referral', component: () => import('@/views/referral/ReferralDetail.vue'), meta: { roles: REFERRAL_ROLES, title: 'referral.detailTitle' } },
        { path: 'consultations', name: 'consultations', component: () => import('@/views/consultation/ConsultationWorklist.vue'), meta: { roles: ['doctor'], title: 'consultation.worklistTitle' } },
        { path: 'consultations/new', name: 'consultation-new', component: () => import('@/views/consultation/ConsultationForm.vue'), meta: { roles: ['doctor'], title: 'consultation.formTitle' } },
        { path: 'consultations/board', name: 'consultation-board', component: () => import('@/views/consultation/ConsultationBoard.vue'), meta: { roles: CONSULTATION_CENTRE_ROLES, title: 'consultation.boardTitle' } },
        { path: 'consultations/accounting', name: 'consultation-accounting', component: () => import('@/views/consultation/ConsultationAccounting.vue'), meta: { roles: CONSULTATION_STATS_ROLES, title: 'consultation.accountingTitle' } },
        { path: 'consultations/:id', name: 'consultation', component: () => import('@/views/consultation/ConsultationDetail.vue'), meta: { roles: CLINICAL_ROLES, title: 'consultation.detailTitle' } },
        { path: 'booking/new', name: 'booking-new', component: () => import('@/views/booking/BookingForm.vue'), meta: { roles: CLINICAL_ROLES, title: 'booking.bookTitle' } },
        { path: 'booking/day', name: 'booking-day', component: () => import('@/views/booking/DayList.vue'), meta: { roles: CLINICAL_ROLES, title: 'booking.dayTitle' } },
        { path: 'booking/schedules', name: 'schedules', component: () => import('@/views/booking/ScheduleManager.vue'), meta: { roles: ADMIN_ROLES, title: 'booking.schedulesTitle' } },
        { path: 'appointments/:id', name: 'appointment', component: () => import('@/views/booking/AppointmentDetail.vue'), meta: { roles: CLINICAL_ROLES, title: 'booking.appointmentTitle' } },
        { path: 'records', name: 'records', component: () => import('@/views/record/PersonRecord.vue'), meta: { roles: ['doctor'], title: 'record.title' } },
        { path: 'records/persons/:id', name: 'record', component: () => import('@/views/record/PersonRecord.vue'), meta: { roles: ['doctor'], title: 'record.title' } },
        { path: 'records/documents/:docId', name: 'record-document', component: () => import('@/views/record/DocumentView.vue'), meta: { roles: ['doctor'], title: 'record.doc.title' } },
        { path: 'imaging', name: 'imaging', component: () => import('@/views/imaging/StudyList.vue'), meta: { roles: IMAGING_ROLES, title: 'imaging.listTitle' } },
        { path: 'imaging/upload', name: 'imaging-upload', component: () => import('@/views/imaging/UploadView.vue'), meta: { roles: ['doctor', 'institution_admin'], title: 'imaging.upload.title' } },
        { path: 'imaging/reconciliation', name: 'imaging-reconciliation', component: () => import('@/views/imaging/Reconciliation.vue'), meta: { roles: IMAGING_ROLES, title: 'imaging.reconcile.title' } },
        { path: 'imaging/dead-letters', name: 'imaging-dead-letters', component: () => import('@/views/imaging/DeadLetters.vue'), meta: { roles: ADMIN_ROLES, title: 'imaging.dead.title' } },
        { path: 'imaging/studies/:uid', name: 'imaging-study', component: () => import('@/views/imaging/StudyView.vue'), meta: { roles: IMAGING_ROLES, title: 'imaging.study.title' } },
        { path: 'admin/audit', name: 'audit', component: () => import('@/views/record/AuditSearch.vue'), meta: { roles: ADMIN_ROLES, title: 'audit.title' } },
        { path: 'admin/institutions', name: 'institutions', component: () => import('@/views/directory/InstitutionList.vue'), meta: { roles: ADMIN_ROLES, title: 'directory.title' } },
        { path: 'admin/institutions/:id', name: 'institution', component: () => import('@/views/directory/InstitutionStaff.vue'), meta: { roles: ADMIN_ROLES, title: 'directory.title' } },
        { path: ':pathMatch(.*)*', name: 'not-found', component: () => import('@/views/NotFoundView.vue'), meta: { title: 'state.notFound' } },
      ],
    },
  ],
})

function toLogin(to: RouteLocationNormalized, reason: string) {
  const query: Record<string, string> = {}
  if (to.name !== 'login' && to.fullPath !== '/') query.redirect = to.fullPath
  if (reason) query.reason = reason
  return { name: 'login', query }
}

router.beforeEach((to) => {
  if (to.meta.public) return true
  if (!signedIn()) return toLogin(to, '')
  if (tokenExpired()) {
    endSession() // drafts stay: they are restored after signing in again
    return toLogin(to, 'expired')
  }
  if (role.value === 'resident') return { name: 'staff-only' }
  return true
})

/**
 * Back to sign-in, and to the same page afterwards, where forms restore their drafts: when a
 * signed-in call is answered 401 (expired, revoked, a key rotation) or the token's expiry
 * time passes while a page is open (the screen locks itself instead of showing stale data).
 */
export function sessionLost(code: string): void {
  const current = router.currentRoute.value
  if (current.meta.public) return
  endSession()
  void router.push(toLogin(current, code === 'TOKEN_EXPIRED' ? 'expired' : code))
}

setUnauthenticatedHandler((error) => sessionLost(error.code))
