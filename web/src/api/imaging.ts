/**
 * Regional imaging (区域影像中心, 云胶片; functions/imaging/app.py and
 * functions/imaging_render/app.py, issue 7): uploads by presigned POST, worklists, a study
 * with its series and instances, previews (image/jpeg), the radiologist's report,
 * reconciliation of studies that matched nobody, share links and the cloud-film page (no
 * sign-in), dead letters.
 */
import { ApiError, api, apiUrl, request, requestBlob } from './client'

export const WINDOWS = ['default', 'lung', 'bone', 'soft_tissue', 'brain', 'mediastinum'] as const
export type WindowPreset = (typeof WINDOWS)[number]
export const MODALITIES = ['CT', 'MR', 'DX', 'CR', 'US', 'MG', 'XA', 'NM', 'PT', 'RF'] as const

export type ReportStatus = 'preliminary' | 'final' | 'amended'
export type LinkStatus = 'linked' | 'unlinked'
export type FileStatus = 'pending' | 'indexed' | 'duplicate' | 'rejected' | 'failed'

export interface StudySummary {
  study_uid: string
  date: string | null // DICOM DA: 20261120
  time: string | null
  description: string | null
  modalities: string[]
  accession: string | null
  institution_id: string | null
  person_id: string | null
  link_status: LinkStatus | null
  series_count: number | null
  instance_count: number | null
  report_status: ReportStatus | null
  patient_name: string | null
}

/** The patient as the DICOM header says (PatientName, PatientSex, PatientBirthDate, ID). */
export interface DicomPatient {
  patient_id: string
  name: string
  sex: string // M F O
  birth_date: string
  id_card_masked: string
}

export interface Candidate {
  person_id: string
  score: number
}

export interface Instance {
  sop_uid: string
  number: number | null
  frames: number
  rows: number | null
  columns: number | null
  transfer_syntax: string | null
  window: number[] | null
}

export interface Series {
  series_uid: string
  number: number | null
  description: string | null
  modality: string | null
  body_part: string | null
  instance_count: number | null
  thumbnail: string | null // ready | pending | undecodable ...
  thumbnail_url?: string
  thumbnail_reason: string | null
  instances: Instance[]
}

export interface Report {
  version: number
  status: ReportStatus
  technique: string
  findings: string
  impression: string
  recommendation: string
  critical: boolean
  signed_by_name: string
  institution_id: string
  signed_at: string
}

export interface Share {
  link_id: string
  created_at: string
  expires_at: string
  created_by_name: string
  label: string
  has_code: boolean
  revoked_at: string | null
}

export interface Study extends StudySummary {
  patient?: DicomPatient
  candidates?: Candidate[] | null
  link_reason?: string | null
  series: Series[]
  report: Report | null
  shares: Share[]
  can_report: boolean
}

export interface UploadFile {
  name: string
  key: string
  size: number
  post: { url: string; fields: Record<string, string> }
  put_url: string
}

export interface UploadBatch {
  batch_id: string
  expires_in: number
  max_bytes: number
  files: UploadFile[]
}

export interface FileState {
  name: string
  key: string
  status: FileStatus
  code: string | null
  message: string | null
  study_uid: string | null
  attempts: number | null
}

export interface BatchStatus {
  batch_id: string
  institution_id: string
  created_at: string
  counts: Partial<Record<FileStatus, number>>
  files: FileState[]
}

export interface StudyQuery {
  institution_id?: string
  StudyDate?: string // 20260101-20261231
  ModalitiesInStudy?: string
  unreported?: '1'
}

export interface ReportDraft {
  technique: string
  findings: string
  impression: string
  recommendation: string
  critical: boolean
  status: 'preliminary' | 'final'
  version?: number
}

export interface UnlinkedStudy extends StudySummary {
  patient: DicomPatient
  candidates: Candidate[]
  link_reason: string | null
  created_at: string
}

export interface NewShare {
  days: number
  access_code?: string
  label?: string
}

export interface CreatedShare extends Share {
  token: string
  path: string
}

export interface Film {
  study: Omit<StudySummary, 'person_id' | 'accession' | 'link_status'> & {
    patient: { name: string; sex: string | null; birth_year: string }
  }
  series: Series[]
  report: Report | null
  expires_at: string
}

export interface DeadLetter {
  key: string
  status: string
  code: string | null
  message: string | null
  attempts: number | null
  updated_at: string | null
}

const s = (uid: string) => `/imaging/studies/${encodeURIComponent(uid)}`
const inst = (uid: string, sop: string) => `${s(uid)}/instances/${encodeURIComponent(sop)}`
const film = (token: string) => `/film/${encodeURIComponent(token)}`
const windowParam = (w: WindowPreset) => (w === 'default' ? undefined : w)

export const imaging = {
  studies: (q: StudyQuery = {}) => api.get<{ institution_id: string; studies: StudySummary[] }>('/imaging/studies', { ...q }),
  personStudies: (personId: string) =>
    api.get<{ person_id: string; studies: StudySummary[] }>(`/imaging/persons/${encodeURIComponent(personId)}/studies`),
  study: (uid: string) => api.get<Study>(s(uid)),
  original: (uid: string, sop: string) => api.get<{ url: string }>(`${inst(uid, sop)}/original`),
  /** The rendered preview, fetched with the bearer token: a Blob for an object URL. */
  preview: (uid: string, sop: string, window: WindowPreset, frame = 0, signal?: AbortSignal) =>
    requestBlob(`${inst(uid, sop)}/preview`, { window: windowParam(window), frame: frame || undefined }, 'image/jpeg', signal),
  report: (uid: string, draft: ReportDraft) => api.post<Report>(`${s(uid)}/report`, draft),
  startUpload: (files: { name: string; size: number }[]) => api.post<UploadBatch>('/imaging/uploads', { files }),
  uploadStatus: (batchId: string) => api.get<BatchStatus>(`/imaging/uploads/${encodeURIComponent(batchId)}`),
  reconciliation: () => api.get<{ studies: UnlinkedStudy[] }>('/imaging/reconciliation'),
  link: (uid: string, personId: string) => api.post<StudySummary>(`${s(uid)}/link`, { person_id: personId }),
  share: (uid: string, body: NewShare) => api.post<CreatedShare>(`${s(uid)}/shares`, body),
  revokeShare: (uid: string, linkId: string) =>
    api.post<{ link_id: string; revoked_at: string }>(`${s(uid)}/shares/${encodeURIComponent(linkId)}/revoke`),
  deadLetters: () => api.get<{ messages: DeadLetter[] }>('/imaging/dead-letters'),
  redrive: () => api.post<{ redriven: number }>('/imaging/dead-letters/redrive'),
  /** The cloud-film page's data: no sign-in, the link (and its access code) is the key. */
  film: (token: string, code?: string) => request<Film>('GET', film(token), { anonymous: true, query: { code } }),
  /** A share link's preview as an <img src> (unauthenticated; the <img> asks for an image). */
  filmPreviewUrl: (token: string, sop: string, window: WindowPreset, frame = 0, code?: string) =>
    apiUrl(`${film(token)}/instances/${encodeURIComponent(sop)}/preview`, { code, window: windowParam(window), frame: frame || undefined }),
}

/** One file's presigned POST to S3: the policy's fields first, then the file (S3's rule). */
export async function postToS3(target: UploadFile, file: Blob): Promise<void> {
  const form = new FormData()
  for (const [k, v] of Object.entries(target.post.fields)) form.append(k, v)
  form.append('file', file)
  let resp: Response
  try {
    resp = await fetch(target.post.url, { method: 'POST', body: form })
  } catch (e) {
    throw new ApiError(0, 'UPLOAD_NETWORK', (e as Error).message || 'network error')
  }
  if (!resp.ok) {
    const text = await resp.text().catch(() => '')
    const code = /<Code>([^<]+)<\/Code>/.exec(text)?.[1] ?? `HTTP_${resp.status}`
    const message = /<Message>([^<]+)<\/Message>/.exec(text)?.[1] ?? resp.statusText
    throw new ApiError(resp.status, code, message)
  }
}

/** The web address a share token opens (this client's /film/{token} route). */
export function filmLink(token: string): string {
  const base = import.meta.env.BASE_URL.replace(/\/+$/, '')
  return `${window.location.origin}${base}/film/${encodeURIComponent(token)}`
}
