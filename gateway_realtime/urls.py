from django.urls import path

from gateway_realtime import views

app_name = "gateway_realtime"

urlpatterns = [
    path("realtime/", views.RealtimeClientSecretView.as_view(), name="realtime"),
    path("transcription/", views.TranscriptionClientSecretView.as_view(), name="transcription"),
    path("speech/", views.SpeechClientSecretView.as_view(), name="speech"),
]
