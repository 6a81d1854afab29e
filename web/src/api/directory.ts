/** The directory API (functions/directory/app.py): institutions and their staff. */
import type { LoginResponse, Role } from '@/auth/session'
import { api, request } from './client'

export type Tier = 'regional' | 'county' | 'township' | 'village'
export const TIERS: Tier[] = ['regional', 'county', 'township', 'village']
export type InstitutionType =
  | 'regional_hospital'
  | 'general_hospital'
  | 'tcm_hospital'
  | 'maternal_child'
  | 'township_health_centre'
  | 'community_health_centre'
  | 'village_clinic'
  | 'community_health_station'

export const INSTITUTION_TYPES: InstitutionType[] = [
  'regional_hospital',
  'general_hospital',
  'tcm_hospital',
  'maternal_child',
  'township_health_centre',
  'community_health_centre',
  'village_clinic',
  'community_health_station',
]

export const TIER_OF_TYPE: Record<InstitutionType, Tier> = {
  regional_hospital: 'regional',
  general_hospital: 'county',
  tcm_hospital: 'county',
  maternal_child: 'county',
  township_health_centre: 'township',
  community_health_centre: 'township',
  village_clinic: 'village',
  community_health_station: 'village',
}

export const TIER_RANK: Record<Tier, number> = { village: 0, township: 1, county: 2, regional: 3 }

export interface Institution {
  institution_id: string
  consortium_id: string
  name: string
  tier: Tier
  type: InstitutionType
  parent_id: string | null
  code: string
  address: string
  phone: string
  active: boolean
  /** false for hospitals outside the county (tier regional). */
  in_county?: boolean
}

export interface NewInstitution {
  name: string
  type: InstitutionType
  institution_id?: string
  parent_id?: string
  code?: string
  address?: string
  phone?: string
}

export type InstitutionChanges = Partial<Pick<Institution, 'name' | 'address' | 'phone' | 'code' | 'active'>>

export interface Doctor {
  doctor_id: string
  consortium_id: string
  institution_id: string
  name: string
  department: string
  title: string
  phone?: string
  username?: string
  role?: Exclude<Role, 'resident'>
  active: boolean
}

export interface NewDoctor {
  institution_id: string
  name: string
  department: string
  title?: string
  phone?: string
  doctor_id?: string
  username?: string
  password?: string
  role?: Exclude<Role, 'resident'>
}

export type DoctorChanges = Partial<Pick<Doctor, 'name' | 'department' | 'title' | 'phone' | 'active'>>

export const directory = {
  login: (username: string, password: string) =>
    request<LoginResponse>('POST', '/auth/login', { body: { username, password }, anonymous: true }),
  institutions: (tier?: Tier) => api.get<{ items: Institution[] }>('/institutions', { tier }).then((r) => r.items),
  institution: (id: string) => api.get<Institution>(`/institutions/${encodeURIComponent(id)}`),
  createInstitution: (body: NewInstitution) => api.post<Institution>('/institutions', body),
  updateInstitution: (id: string, changes: InstitutionChanges) =>
    api.patch<Institution>(`/institutions/${encodeURIComponent(id)}`, changes),
  doctors: (institutionId: string) =>
    api.get<{ items: Doctor[] }>(`/institutions/${encodeURIComponent(institutionId)}/doctors`).then((r) => r.items),
  createDoctor: (body: NewDoctor) => api.post<Doctor>('/doctors', body),
  updateDoctor: (id: string, changes: DoctorChanges) => api.patch<Doctor>(`/doctors/${encodeURIComponent(id)}`, changes),
}
